"""The web page in real headless Chromium: upload a clip, ask, watch the answer stream in."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

import af2
from af2.parity import fixture_config
from af2.serve.app import ServeConfig
from af2.serve.local import running_server

webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "serve-screenshot.png"
QUESTION = "w189 w486 w363 w128"


def _browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    # Loopback only: no background networking, sync or component updates (the machine has no internet).
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=900,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver (scripts/setup.sh)")
def test_page_uploads_asks_and_streams(fixture_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    api = af2.load(fixture_dir / "checkpoint", config=fixture_config(fixture_dir), max_audio_seconds=25)
    clip = fixture_dir / "audio" / "long.wav"  # 27 s: more than the 25 s this server hears, so truncated
    bad = tmp_path / "broken.wav"
    expected = api.ask(clip, QUESTION, max_new_tokens=24).text
    with running_server(ServeConfig("tiny-af2"), lambda: api) as url:
        driver = _browser()
        try:
            driver.set_page_load_timeout(30)
            driver.get(url)
            wait = WebDriverWait(driver, 30, poll_frequency=0.1)
            wait.until(lambda d: "tiny-af2" in d.find_element(By.ID, "status").text)
            driver.find_element(By.ID, "file").send_keys(str(clip))
            wait.until(lambda d: "27.3 s" in d.find_element(By.ID, "duration").text)
            driver.find_element(By.ID, "question").send_keys(QUESTION)
            tokens = driver.find_element(By.ID, "max-tokens")
            tokens.clear()
            tokens.send_keys("24")
            driver.find_element(By.ID, "ask").click()
            answer = driver.find_element(By.ID, "answer")
            wait.until(lambda d: answer.get_attribute("data-state") in ("done", "error"))
            time.sleep(0.2)  # let the last paint land before the screenshot
            SCREENSHOT.parent.mkdir(exist_ok=True)
            driver.save_screenshot(str(SCREENSHOT))
            assert answer.get_attribute("data-state") == "done", driver.find_element(By.ID, "answer-msg").text
            assert answer.text == expected
            assert int(answer.get_attribute("data-chunks")) > 1  # it arrived in pieces
            assert "truncated" in driver.find_element(By.ID, "answer-msg").text
            assert "first token" in driver.find_element(By.ID, "facts").text

            bad.write_bytes(b"RIFF\x00\x00not really audio" * 50)  # a bad file gets a clear message
            driver.find_element(By.ID, "file").send_keys(str(bad))
            wait.until(lambda d: "cannot preview" in d.find_element(By.ID, "audio-msg").text)
            driver.find_element(By.ID, "ask").click()
            wait.until(lambda d: answer.get_attribute("data-state") in ("done", "error"))
            message = driver.find_element(By.ID, "answer-msg").text
            assert answer.get_attribute("data-state") == "error" and "cannot decode audio" in message
        finally:
            driver.quit()
