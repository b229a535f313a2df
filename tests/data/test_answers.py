"""Answer extraction and equivalence: a table of equivalent and non-equivalent pairs."""

import pytest

from reasonjax.data import answers
from reasonjax.data.answers import answers_equal, extract_answer, parse_latex, parse_number

# (prediction, reference, equivalent)
MATH_CASES = [
    ("0.5", "1/2", True),
    ("0.5", r"\frac{1}{2}", True),
    (r"\frac12", r"\frac{1}{2}", True),
    (r"\dfrac{1}{2}", "0.5", True),
    (r"\tfrac{3}{4}", "0.75", True),
    ("1,000", "1000", True),
    ("1,234,567", "1234567", True),
    (r"1{,}000", "1000", True),
    ("-0", "0", True),
    ("+7", "7", True),
    (r"\boxed{5}", "5", True),
    (r"\boxed{\boxed{5}}", "5", True),
    (r"\boxed{\frac{1}{2}}", "0.5", True),
    ("5 cm", "5", True),
    (r"5\text{ cm}", "5", True),
    ("12 apples", "12", True),
    ("18 dollars", "18", True),
    ("$18.00", "18", True),
    (r"\$1,234.50", "1234.5", True),
    (r"50\%", "50", True),
    ("30^\\circ", "30", True),
    ("x = 5", "5", True),
    ("x=5", "-5", False),
    ("-3", "3", False),
    ("1/3", "0.33", False),
    ("0.333", r"\frac{1}{3}", False),
    ("50%", "0.5", False),
    ("5x", "5", False),
    (".5", "0.5", True),
    ("1e3", "1000", True),
    ("2\\frac{1}{2}", "5/2", True),
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", True),
    (r"\sqrt{8}", r"2\sqrt{2}", True),
    (r"\sqrt[3]{27}", "3", True),
    (r"\sqrt{2}", "1.414", False),
    (r"\pi", "3.14159", False),
    (r"2\pi", r"\pi \cdot 2", True),
    ("x^2+2x+1", "(x+1)^2", True),
    ("x^2+1", "(x+1)^2", False),
    ("3x", "x*3", True),
    ("2^10", "1024", True),
    (r"\log_2 8", "3", True),
    ("|-3|", "3", True),
    ("5!", "120", True),
    ("(1,2)", "(1, 2)", True),
    ("(1,2)", "(2,1)", False),
    ("(1, 2]", "(1,2]", True),
    ("(1,2]", "(1,2)", False),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\pi/2)", True),
    (r"(-\infty, 2]", "(-inf, 2]", True),
    ("1, -2", "-2, 1", True),
    ("1, 2", "1, 3", False),
    (r"\{1,2\}", r"\{2,1\}", True),
    (r"\text{east}", "East", True),
    ("north", "south", False),
    ("1/0", "0", False),
    ("10^{10^{10}}", "1", False),
    ("", "0", False),
]


@pytest.mark.parametrize("pred,ref,equal", MATH_CASES)
def test_math_equivalence_table(pred, ref, equal):
    assert answers_equal(pred, ref) is equal
    assert answers_equal(ref, pred) is equal  # symmetric


CHOICE_CASES = [
    ("B", "B", True), ("(B)", "B", True), ("b", "B", True), (r"\text{(C)}", "C", True),
    ("B) 42", "B", True), ("B.", "B", True), ("A", "B", False), ("(D)", "C", False),
]


@pytest.mark.parametrize("pred,ref,equal", CHOICE_CASES)
def test_choice_letters(pred, ref, equal):
    assert answers_equal(pred, ref, mode="choice") is equal


def test_table_size():
    assert len(MATH_CASES) + len(CHOICE_CASES) >= 40
    assert sum(not e for _, _, e in MATH_CASES) >= 15


def test_none_prediction_is_wrong():
    assert not answers_equal(None, "5")


@pytest.mark.parametrize("text,style,expected", [
    (r"so the total is \boxed{\frac{1}{2}}.", "auto", r"\frac{1}{2}"),
    (r"\boxed{a} then \boxed{\frac{3}{\sqrt{4}}}", "boxed", r"\frac{3}{\sqrt{4}}"),
    (r"\boxed 7 apples", "boxed", "7"),
    ("She pays 3 + 4 = 7.\n#### 1,000", "gsm8k", "1,000"),
    ("12+7\nanswer: 19\nanswer: 3", "tag", "19"),
    ("Answer: 4 5 6", "tag", "4 5 6"),
    ("The answer is 42.", "auto", "42"),
    ("we get 3 and then 7", "auto", "7"),
    ("no number here", "auto", None),
    ("The answer is (B).", "choice", "B"),
    ("answer: c", "choice", "C"),
    ("I think A cat is here", "choice", None),
    ("The answer is a rock.", "choice", None),
    ("The answer is (b) steam.", "choice", "B"),
    ("D", "choice", "D"),
])
def test_extraction(text, style, expected):
    assert extract_answer(text, style) == expected


def test_extraction_rejects_unknown_style():
    with pytest.raises(ValueError, match="style must be one of"):
        extract_answer("x", "latex")


def test_parse_number_exact():
    from fractions import Fraction
    assert parse_number("-3.25") == Fraction(-13, 4)
    assert parse_number(r"-\frac{2}{6}") == Fraction(-1, 3)
    assert parse_number("1/0") is None
    assert parse_number("abc") is None


def test_parser_never_evaluates_code():
    # sympy.sympify would run this; our parser only knows math tokens
    assert parse_latex("__import__('os').system('true')") is None
    assert not answers_equal("__import__('os')", "0")


def test_hostile_answers_are_refused_not_computed():
    # huge powers / factorials are refused before sympy tries them (this would not end)
    for text in ["9^{9^{9^{9}}}", "1000000!", "(" * 300 + "1" + ")" * 300, "x" * 5000]:
        assert parse_latex(text) is None
        assert not answers_equal(text, "1")


def test_math_verify_backend_needs_package():
    try:
        import math_verify  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="math-verify"):
            answers_equal("1/2", "0.5", backend="math_verify")
    else:
        assert answers_equal("1/2", "0.5", backend="math_verify")


def test_normalize_examples():
    assert answers.normalize(r"$\left(1, 2\right)$") == "(1, 2)"
    assert answers.normalize(r"\text{12 dollars}.") == "12"


from fractions import Fraction  # noqa: E402

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(st.integers(-10**9, 10**9), st.integers(1, 10**4))
def test_spellings_of_one_rational_are_equal(num, den):
    q = Fraction(num, den)
    ref = f"{q.numerator}/{q.denominator}"
    sign = "-" if q < 0 else ""
    spellings = [f"{num}/{den}", f"{sign}\\frac{{{abs(num)}}}{{{den}}}",
                 f"{sign}\\dfrac{{{abs(q.numerator)}}}{{{q.denominator}}}", f"\\boxed{{{ref}}}"]
    if q.denominator == 1:
        spellings += [f"{q.numerator:,}", f"${q.numerator}", f"{q.numerator} apples"]
    for s in spellings:
        assert answers_equal(s, ref), s
    assert not answers_equal(f"{q.numerator + 1}/{q.denominator}", ref)


@given(st.decimals(min_value=-10**6, max_value=10**6, places=3, allow_nan=False))
def test_decimals_equal_their_fraction(d):
    q = Fraction(d)
    assert answers_equal(str(d), f"{q.numerator}/{q.denominator}")
    assert answers_equal(repr(float(d)), f"{q.numerator}/{q.denominator}")  # "1.5", "-0.0"
