"""LlamaGrammar: the pure-Python GBNF parser against llama.cpp's verdict (the pinned
src/llama-grammar.cpp, through SamplerChain.add_grammar), error positions, the pure-Python
matcher against llama.cpp's grammar sampler, and SmolLM2 output under a grammar."""

from __future__ import annotations

import logging
import pickle
import random
import re
from pathlib import Path

import pytest

import llamabind as lb
from grammar_check import llama_cpp_accepts, llama_cpp_parses
from llamabind.llama_grammar import JSON_GBNF, GrammarParseError, LlamaGrammar

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = sorted((ROOT / "extern" / "llama.cpp" / "grammars").glob("*.gbnf"))

# Grammars both parsers accept, including llama.cpp's quirks.
VALID = [
    JSON_GBNF,
    'root ::= "a"\nroot ::= "b"',  # a second definition replaces the first
    "root ::= [z-a]",  # an empty range: valid, matches nothing
    "root ::=",  # an empty rule
    "root ::= [] [^] \"x\"",  # an empty class adds nothing at all
    "root ::= <[5]> !<[6]>*",
    "root ::= <|im_start|> \"x\"",  # a token by its text (one token of SmolLM2)
    'root ::= "a"{0,5000}',  # a maximum above 2000 means "no maximum"
    'root ::= "abc"{0}',
    "root ::= x\nx ::= y\ny ::= ",
    'root ::= b root | "x"\nb ::= "q"?',  # left recursion in tail position, which llama.cpp survives
    'root ::= ws* "x"\nws ::= " "?',
    'root ::= "a" {2, 3}',
    'root::="a"',
    'root ::= ( "a"\n | "b"\n )',  # newlines inside a group
    'root ::= "a"\r\nx ::= "b"\r\n',
    'root ::= [\\]\\[\\-] "\\x41\\u00e9\\U0001F600\\"\\\\" .',
    'root ::= "a" # comment\n# another\n\n',
    'root ::= "multi\nline"',  # a string literal may hold a newline
    'root ::= "x" root-2\nroot-2 ::= "y"',
    '3d ::= "x"\nroot ::= 3d',
    'root ::= [a-]+ [-a] [^-]',
    'root ::= ("a" ("b" "c"){2}){3}',
    'root ::= ( "a" | ) "b"',
]

# Grammars both reject.
INVALID = [
    'root ::= root "a" | "b"',
    'root ::= ("a" | ) root "z" | "x"',
    'root ::= a\na ::= b "x"\nb ::= c?\nc ::= a "y"',
    'root ::= x\nx ::= x',
    "# only a comment\n",
    " \n",
    'root ::= "a" )',
    'root ::= foo\nbar ::= "x"',
    'root ::= a b\na ::= "x"',
    "root ::= <notatoken>",
    'root ::= "\\q"',
    "root ::= [\\^]",
    'root ::= "a"{2001}',
    'a ::= "x"',
    'root ::= "a"{10}{300}',
    'root ::= ("a" "b"){50}{50}',
    'root ::= ("a"{0,1000}){2}',
    'root ::= "\\x4"',
    "root ::= ! <[5]>",
    "root ::= <[ 5]>",
    "root ::= <[99999999999]>",
    "root ::= <abc",
    'root :: = "a"',
    'root\n::= "a"',
    'root ::= "abc',
    "root ::= [abc",
    'root ::= ( "a" | "b"',
    'root ::= ""*',
    "root ::= *",
    'root ::= "a" "b"\n| "c"',
    'root ::= "a"{1,2,3}',
    'root ::= "a"{,3}',
    'root ::= "a"{2',
    'root ::= "a" "b"{0}+',
]

# Where llama.cpp and we part ways, on purpose: llama.cpp reads "" as "no grammar", and loops
# forever on the others (so they are never given to it).
OURS_ONLY = {
    "": "empty grammar",
    'root ::= "a"{3,1}': "bad repetition bounds",
    'root ::= b root "z" | "x"\nb ::= "q"?': "would hang",
    'root ::= "{" value "}"\nvalue ::= array | "1"\narray ::= ws ( value ws )? "]"\nws ::= [ ]{0,3}': "would hang",
}


@pytest.fixture(scope="session")
def vocab(smollm2: lb.Model) -> lb.Vocab:
    return smollm2.vocab


@pytest.fixture(scope="session")
def llm(smollm2_path: Path) -> lb.Llama:
    # One thread: llama.cpp's threads spin at barriers, so on a 2-core machine with any other
    # load, two threads can make a decode 100x slower; one keeps these short runs predictable.
    return lb.Llama(str(smollm2_path), n_ctx=512, verbose=False, n_threads=1, n_threads_batch=1)


def ours_parses(text: str, vocab: lb.Vocab | None = None) -> str | None:
    try:
        LlamaGrammar(text, vocab=vocab)
    except GrammarParseError as err:
        return err.reason
    return None


# ---------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_bundled_grammars_validate(path: Path, vocab: lb.Vocab) -> None:
    grammar = LlamaGrammar.from_file(path)
    assert grammar.grammar == path.read_text(encoding="utf-8")
    assert "root" in grammar.rule_names
    assert llama_cpp_parses(vocab, grammar.grammar) is None


def test_bundled_grammars_exist() -> None:
    assert len(BUNDLED) >= 8


@pytest.mark.parametrize("text", VALID)
def test_valid_grammars_agree_with_llama_cpp(text: str, vocab: lb.Vocab) -> None:
    assert ours_parses(text, vocab) is None
    assert llama_cpp_parses(vocab, text) is None


@pytest.mark.parametrize("text", INVALID)
def test_invalid_grammars_agree_with_llama_cpp(text: str, vocab: lb.Vocab) -> None:
    assert ours_parses(text, vocab) is not None
    assert llama_cpp_parses(vocab, text) is not None


@pytest.mark.parametrize("text,why", OURS_ONLY.items())
def test_grammars_llama_cpp_mishandles_are_rejected(text: str, why: str) -> None:
    with pytest.raises(lb.GrammarError, match=why):
        LlamaGrammar.from_string(text)


def test_empty_text_means_no_grammar_to_llama_cpp(vocab: lb.Vocab) -> None:
    assert llama_cpp_parses(vocab, "") is None


def test_mutated_grammars_agree_with_llama_cpp(vocab: lb.Vocab) -> None:
    """Random edits of the bundled grammars: where we accept, llama.cpp must; where we reject,
    llama.cpp must too, except for the grammars it would hang on (never given to it)."""
    rng = random.Random(1234)
    sources = [p.read_text(encoding="utf-8") for p in BUNDLED] + [JSON_GBNF]
    pieces = list('"[]()|*+?{}.,:=#\\-^ \n\tabxyz019<>!') + ["::=", "\\x", "\\u00", "{2}", "{1,3}", "root", "<[1]>"]
    checked = 0
    for _ in range(300):
        text = rng.choice(sources)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(text) + 1)
            op = rng.random()
            if op < 0.4:
                text = text[:pos] + text[pos + rng.randint(1, 4):]
            else:
                text = text[:pos] + rng.choice(pieces) + text[pos + (op >= 0.8):]
        ours = ours_parses(text, vocab)
        if ours is not None and ("would hang" in ours or "bad repetition bounds" in ours):
            continue
        theirs = llama_cpp_parses(vocab, text)
        assert (ours is None) == (theirs is None), (text, ours, theirs)
        checked += 1
    assert checked > 250


def test_token_text_is_checked_against_a_vocabulary(smollm2: lb.Model) -> None:
    LlamaGrammar("root ::= <notatoken>")  # no vocabulary: llama.cpp checks it when sampling
    with pytest.raises(lb.GrammarError, match="not a single token"):
        LlamaGrammar("root ::= <notatoken>", vocab=smollm2)
    LlamaGrammar.from_string("root ::= <|im_start|> !<|im_end|>*", vocab=smollm2.vocab)


# ---------------------------------------------------------------------------------------
# Error messages

POSITIONS = [
    ('root ::= "a"\nitem ::= foo\n', 2, 10, "undefined rule 'foo'"),
    ('root ::= "a"\nitem := "b"', 2, 6, "expected '::='"),
    ('root ::= "abc', 1, 10, "unterminated string literal"),
    ("root ::= [a-z", 1, 10, "unterminated character class"),
    ('root ::= "a\\qb"', 1, 12, "unknown escape '\\q'"),
    ('root ::= "\\u12G4"', 1, 11, "needs 4 hex digits"),
    ('root ::= "a"{3,1}', 1, 13, "bad repetition bounds {3,1}"),
    ('root ::= "a"{2001}', 1, 13, "exceeds llama.cpp's limit"),
    ("root ::= +", 1, 10, "'+' has nothing to repeat"),
    ("", 1, 1, "empty grammar"),
    ('item ::= "a"', 1, 1, "no rule named 'root'"),
    ('root ::= "x"\nexpr ::= expr "+" "1" | "1"', 2, 1, "left recursion: rule 'expr'"),
    ('root ::= ( "a" | "b"', 1, 10, "unclosed '('"),
    ('root ::= ( "a" ]', 1, 16, "expected ')'"),
    ('root ::= "a" )', 1, 14, "unexpected ')'"),
    ('root ::= \t"a"{2001}', 1, 14, "exceeds"),  # a tab is one column
    ('root ::= "é" [', 1, 14, "unterminated character class"),  # columns count characters
    ('root ::= "a"\r\nx ::= y\r\n', 2, 7, "undefined rule 'y'"),
    ("root ::= <[12", 1, 14, "expected ']'"),
    ("root ::= <[12]", 1, 15, "expected '>'"),
    ('root ::= "a"\0', 1, 13, "NUL character"),
]


@pytest.mark.parametrize("text,line,column,reason", POSITIONS)
def test_errors_give_line_column_and_reason(text: str, line: int, column: int, reason: str) -> None:
    with pytest.raises(GrammarParseError) as info:
        LlamaGrammar.from_string(text)
    err = info.value
    assert (err.line, err.column) == (line, column), str(err)
    assert reason in err.reason
    assert isinstance(err, lb.GrammarError) and isinstance(err, ValueError)
    message = str(err)
    assert f"line {line}, column {column}" in message and reason in message
    source_line, caret = message.splitlines()[-2:]
    assert source_line.strip() == err.source_line.replace("\t", " ").strip()
    assert caret.index("^") - 4 == column - 1


def test_parse_error_pickles() -> None:
    with pytest.raises(GrammarParseError) as info:
        LlamaGrammar.from_string("root ::= x")
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.line, copy.column, copy.reason) == (info.value.line, info.value.column, info.value.reason)


def test_left_recursion_message_names_the_cycle() -> None:
    with pytest.raises(GrammarParseError, match=r"\(expr -> term -> expr\)"):
        LlamaGrammar.from_string('root ::= expr\nexpr ::= term "+" | "1"\nterm ::= expr "*" | "2"')


def test_suspicious_constructs_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="llamabind"):
        LlamaGrammar.from_string('root ::= [z-a]\nroot ::= "b"')
    text = caplog.text
    assert "empty range" in text and "defined again" in text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="llamabind"):
        LlamaGrammar.from_string('root ::= [z-a]\nroot ::= "b"', verbose=False)
    assert caplog.text == ""


# ---------------------------------------------------------------------------------------
# The public surface


def test_public_names_keep_working(tmp_path: Path) -> None:
    g = LlamaGrammar('root ::= "yes" | "no"')
    assert (g.grammar, g.root) == ('root ::= "yes" | "no"', "root")
    assert LlamaGrammar.from_string(g.grammar, verbose=False).grammar == g.grammar
    path = tmp_path / "yn.gbnf"
    path.write_text(g.grammar, encoding="utf-8")
    assert LlamaGrammar.from_file(path).grammar == g.grammar
    assert LlamaGrammar.from_file(str(path), verbose=False).root == "root"
    other = LlamaGrammar('answer ::= "y"', root="answer")
    assert other.root == "answer" and other.matches("y")
    assert lb.LlamaGrammar is LlamaGrammar
    assert "LlamaGrammar('root ::=" in repr(g)
    with pytest.raises(TypeError):
        LlamaGrammar(b"root ::= x")  # type: ignore[arg-type]


def test_root_other_than_root_reaches_llama_cpp(vocab: lb.Vocab) -> None:
    text = 'answer ::= "y" tail\ntail ::= "es"'
    g = LlamaGrammar(text, root="answer")
    assert g.matches("yes") and not g.matches("y")
    assert llama_cpp_accepts(vocab, text, "yes", root="answer")
    with pytest.raises(lb.GrammarError, match="no rule named 'root'"):
        LlamaGrammar(text)


# ---------------------------------------------------------------------------------------
# The pure-Python matcher, against llama.cpp's grammar sampler

MATCH_CASES = [
    (JSON_GBNF, '{"a": [1, 2.5, -3e2, "x\\n"], "b": {"c": null}}', True),
    (JSON_GBNF, '{"a": [1, 2.5,]}', False),
    (JSON_GBNF, '{"a": 01}', False),
    (JSON_GBNF, '[1, 2]', False),
    (JSON_GBNF, '{"a": "unterminated}', False),
    ("root ::= [a-c]{2,3} \"!\"?", "abc!", True),
    ("root ::= [a-c]{2,3} \"!\"?", "abcd", False),
    ("root ::= [a-c]{2,3} \"!\"?", "a", False),
    ("root ::= [^abc]+", "xyz", True),
    ("root ::= [^abc]+", "xaz", False),
    ("root ::= . . .", "a\nb", True),
    ('root ::= "é" [\\u00e0-\\u00ff]*', "éàü", True),
    ('root ::= b root | "x"\nb ::= "q"?', "qqx", True),
    ('root ::= b root | "x"\nb ::= "q"?', "qqy", False),
    ('root ::= ( "a" | ) "b"', "b", True),
    ('root ::= ("a" ("b" "c"){2}){3}', "abcbc" * 3, True),
    ('root ::= ("a" ("b" "c"){2}){3}', "abcbc" * 2, False),
]


@pytest.mark.parametrize("grammar,text,expected", MATCH_CASES)
def test_matcher_agrees_with_llama_cpp(grammar: str, text: str, expected: bool, vocab: lb.Vocab) -> None:
    assert LlamaGrammar(grammar).matches(text) is expected
    assert llama_cpp_accepts(vocab, grammar, text) is expected


def test_matcher_prefixes() -> None:
    g = LlamaGrammar(JSON_GBNF)
    assert g.matches('{"a": [1', prefix=True)
    assert not g.matches('{"a": [1', prefix=False)
    assert not g.matches('{"a": ]', prefix=True)
    assert not LlamaGrammar("root ::= <[5]>").matches("x")


# ---------------------------------------------------------------------------------------
# SmolLM2 under a grammar

PROMPT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("sampling", [{"temperature": 0.0}, {"temperature": 0.8, "seed": 42}],
                         ids=["greedy", "sampled"])
def test_grammar_constrains_generation(llm: lb.Llama, sampling: dict[str, float]) -> None:
    cases = [
        ('root ::= ("yes" | "no") "."', "Is the sky green?", r"(yes|no)\."),
        ('root ::= "The answer is " [1-9] [0-9]? "."', "What is 7 times 6?", r"The answer is [1-9][0-9]?\."),
        ('root ::= ( "- " [a-z]+ ( " " [a-z]+ )? "\\n" ){2,3}', "List fruits.", r"(- [a-z]+( [a-z]+)?\n){2,3}"),
    ]
    for text, question, pattern in cases:
        g = LlamaGrammar.from_string(text)
        out = llm.create_completion(PROMPT.format(question), grammar=g, max_tokens=48, **sampling)
        choice = out["choices"][0]
        assert choice["finish_reason"] == "stop", choice
        assert re.fullmatch(pattern, choice["text"]), choice["text"]
        assert g.matches(choice["text"])
