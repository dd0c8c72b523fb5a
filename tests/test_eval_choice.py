"""The multiple-choice rules. Every expectation below was worked out by hand from the official
MMAU rule: tokens = lower-cased ``\\b\\w+\\b`` words; correct iff all answer words are in the
prediction and no word of a wrong choice (minus the answer's words) is."""

import pytest

from af2.eval.choice import letter_or_text_match, mmau_string_match

PEOPLE = ["Man", "Woman", "Child", "Robot"]
ARTICLES = ["A child", "A woman", "An adult man", "A teenager"]
DOORS = ["Car door", "House door", "Cabinet door"]
LOCKER = ["A men's locker room post-exercise", "A classroom during a lecture"]

CASES = [
    # (answer, prediction, choices, expected, why)
    ("Man", "Man", PEOPLE, True, "exact"),
    ("Man", "man", PEOPLE, True, "case is ignored"),
    ("Man", "The speaker is a man.", PEOPLE, True, "extra words outside every choice are allowed"),
    ("Man", "Woman", PEOPLE, False, "'woman' is one token, not 'man'"),
    ("Man", "man or woman", PEOPLE, False, "names a wrong choice"),
    ("Man", "", PEOPLE, False, "empty prediction"),
    ("Man", "   ", PEOPLE, False, "whitespace only"),
    ("Man", "...", PEOPLE, False, "punctuation only has no tokens"),
    ("Man", "(A) Man", PEOPLE, True, "'a' is in no wrong choice here"),
    ("Man", "A", PEOPLE, False, "option letters are not understood"),
    ("Man", "MAN!", PEOPLE, True, "punctuation splits words"),
    ("Man", "manly", PEOPLE, False, "whole words only"),
    ("Man", "robot man", PEOPLE, False, "a wrong choice's word"),
    ("Man", "Man\n", PEOPLE, True, "trailing newline"),
    ("A child", "A child", ARTICLES, True, "exact with an article"),
    ("A child", "child", ARTICLES, False, "the answer's 'a' is missing"),
    ("A child", "(a) a child", ARTICLES, True, "'a' belongs to the answer, so '(a)' is harmless"),
    ("A child", "It is a child, not an adult man", ARTICLES, False, "names words of a wrong choice"),
    ("A child", "a child a child", ARTICLES, True, "repetition is ignored"),
    ("An adult man", "an adult man", ARTICLES, True, "exact"),
    ("An adult man", "(A) an adult man", ARTICLES, False, "official quirk: 'a' is a wrong-choice word"),
    ("An adult man", "adult man", ARTICLES, False, "'an' missing"),
    ("An adult man", "man, adult, an", ARTICLES, True, "order is ignored"),
    ("Dog barking", "barking dog", ["Dog barking", "Barking dog", "Cat"], True,
     "a choice with the answer's word set is not a wrong choice"),
    ("Dog barking", "dog barking cat", ["Dog barking", "Barking dog", "Cat"], False, "names 'cat'"),
    ("House door", "house door", DOORS, True, "exact"),
    ("House door", "the door of a house", DOORS, True, "shared word 'door' never counts against"),
    ("House door", "door", DOORS, False, "'house' missing"),
    ("House door", "house door, not car door", DOORS, False, "negation does not help"),
    ("Hip-hop", "hip hop", ["Hip-hop", "Jazz"], True, "the hyphen splits 'hip-hop' into two words"),
    ("Hip-hop", "hiphop", ["Hip-hop", "Jazz"], False, "'hiphop' is a different word"),
    (LOCKER[0], "a men's locker room post exercise", LOCKER, True, "apostrophe and hyphen split words"),
    (LOCKER[0], "men's locker room", LOCKER, False, "'a', 'post', 'exercise' missing"),
    (LOCKER[0], "a men s locker room post-exercise during", LOCKER, False, "'during' is a wrong-choice word"),
    ("4", "4", ["3", "4", "5"], True, "digits are words"),
    ("4", "There are 4 beeps, not 3", ["3", "4", "5"], False, "names a wrong number"),
    ("4", "four", ["3", "4", "5"], False, "no number-word mapping"),
    ("Café", "café", ["Café", "Bar"], True, "Unicode letters are word characters"),
    ("Café", "CAFÉ", ["Café", "Bar"], True, "Unicode lower-casing"),
    ("?", "anything", ["?", "yes"], True, "an answer with no words is contained in any prediction"),
    ("snake_case", "snake_case", ["snake_case", "camel"], True, "the underscore is a word character"),
    ("snake_case", "snake case", ["snake_case", "camel"], False, "so 'snake case' is two other words"),
]


@pytest.mark.parametrize("answer,prediction,choices,expected,why", CASES, ids=[c[4] for c in CASES])
def test_mmau_string_match(answer, prediction, choices, expected, why):
    assert mmau_string_match(answer, prediction, choices) is expected, why


def test_at_least_30_edge_cases():
    assert len(CASES) >= 30


LETTERED = ["violin", "piano", "a drum kit", "flute"]


@pytest.mark.parametrize("prediction,expected", [
    ("B", True), ("(b)", True), ("b. piano", True), ("B) piano", True), ("(B) piano", True),
    ("A", False), ("(c) a drum kit", False),
    ("piano", True),            # no letter: the MMAU rule
    ("a piano", False),         # not option A (an article), so the string rule: 'a' is a word of "a drum kit"
    ("a. piano", False),        # option A is violin
    ("E", False),               # letter beyond the options falls back to the string rule
])
def test_letter_or_text(prediction, expected):
    assert letter_or_text_match("piano", prediction, LETTERED) is expected
