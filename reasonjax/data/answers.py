"""Final-answer extraction and equivalence for GSM8K-, MATH- and multiple-choice-style data.

Extraction (:func:`extract_answer`) reads, by ``style``:

- ``"tag"``: the first line starting with ``answer:`` (the built-in tasks' format);
- ``"boxed"``: the content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (nesting kept);
- ``"gsm8k"``: the text after the last ``####``;
- ``"choice"``: a choice letter (``answer: B``, ``(B)``, ``the answer is B``, a lone ``B``);
- ``"number"``: the last number in the text;
- ``"auto"``: boxed, then ``####``, then ``answer:``, then ``the answer is ...``, then the
  last number.

Equivalence (:func:`answers_equal`) normalises both sides (``$``, ``\\text{}``, ``\\left``,
``\\dfrac``, degrees, percent signs, thousands separators, trailing units, ``x =``
prefixes) and then compares, in order: the strings; exact rationals (``0.5`` = ``1/2`` =
``\\frac{1}{2}``, ``-0`` = ``0``; decimals are exact, so ``0.33`` != ``1/3``); tuples,
intervals and sets element by element (bracket kinds must match; bare comma lists compare as
multisets); and symbolic expressions with sympy (``\\frac{\\sqrt{2}}{2}`` =
``1/\\sqrt{2}``). A percent sign is dropped (``50\\%`` = ``50``, not ``0.5``), as MATH
graders do.

LaTeX is parsed by the small recursive-descent parser below, which builds sympy objects
directly: nothing from a dataset or a model output is ever passed to ``eval`` (sympy's
``parse_expr`` / ``sympify`` evaluate Python code). Exponents and factorials are bounded so
a hostile answer cannot stall the checker. With ``backend="math_verify"`` the
``math-verify`` package (optional, not a dependency) decides instead.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Optional

import sympy

STYLES = ("auto", "tag", "boxed", "gsm8k", "choice", "number")
MODES = ("math", "choice")

# ---------------------------------------------------------------------------------------
# Extraction


def _balanced(text: str, start: int) -> Optional[tuple[str, int]]:
    """``text[start] == '{'``: returns (content, index after the matching '}')."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{" and (i == 0 or text[i - 1] != "\\"):
            depth += 1
        elif text[i] == "}" and (i == 0 or text[i - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
    return None


def extract_boxed(text: str) -> Optional[str]:
    """Content of the last ``\\boxed{...}`` or ``\\fbox{...}``; ``\\boxed 5`` also works."""
    best = None
    for m in re.finditer(r"\\(?:boxed|fbox)\s*", text):
        end = m.end()
        if end < len(text) and text[end] == "{":
            got = _balanced(text, end)
            if got is not None:
                best = got[0]
        else:
            word = re.match(r"[^\s$]+", text[end:])
            if word:
                best = word.group(0)
    return None if best is None else best.strip()


def extract_gsm8k(text: str) -> Optional[str]:
    """The text after the last ``####`` up to the end of its line (GSM8K's answer mark)."""
    i = text.rfind("####")
    if i < 0:
        return None
    rest = text[i + 4:].strip().split("\n")[0].strip()
    return rest or None


_TAG = re.compile(r"^\s*answer\s*:\s*(.*?)\s*$", re.IGNORECASE)


def extract_tagged(text: str) -> Optional[str]:
    """The first line ``answer: X`` (the built-in tasks' last step); returns ``X``."""
    for line in text.split("\n"):
        m = _TAG.match(line)
        if m:
            return m.group(1)
    return None


_THE_ANSWER_IS = re.compile(r"the (?:final )?answer is[:\s]*(.+?)(?:\.\s|\.?$|\n)",
                            re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def extract_last_number(text: str) -> Optional[str]:
    found = _NUMBER.findall(text)
    return found[-1].rstrip(",") if found else None


def extract_choice(text: str, labels: str = "ABCDEFGHIJ") -> Optional[str]:
    """A choice letter from ``answer: B``, ``the answer is (B)``, ``\\boxed{B}``, or a
    text that is only the letter (``B``, ``(B)``, ``B.``)."""
    for candidate in (extract_tagged(text), extract_boxed(text), extract_answer_is(text)):
        if candidate is not None:
            letter = _choice_letter(candidate, labels)
            if letter is not None:
                return letter
    m = re.fullmatch(r"\s*\(?([A-Za-z])\)?\.?\s*", text)
    return m.group(1).upper() if m and m.group(1).upper() in labels else None


def extract_answer_is(text: str) -> Optional[str]:
    """What follows the last "the answer is" (case-insensitive)."""
    found = _THE_ANSWER_IS.findall(text)
    return found[-1].strip() if found else None


def _choice_letter(text: str, labels: str) -> Optional[str]:
    """``B``, ``(b)``, ``B.``, or a letter introducing its option text: ``(B) steam``,
    ``B) steam``, ``B. steam`` (a bare ``A rock`` is an article, not a choice)."""
    s = _unwrap_text(text.strip().strip("$").strip())
    m = (re.fullmatch(r"\(?([A-Za-z])\)?[.:]?", s)
         or re.fullmatch(r"\(([A-Za-z])\)\s.*", s, re.DOTALL)
         or re.fullmatch(r"([A-Z])[.:)]\s.*", s, re.DOTALL))
    if m and m.group(1).upper() in labels:
        return m.group(1).upper()
    return None


def extract_answer(text: str, style: str = "auto") -> Optional[str]:
    """The final answer in ``text`` by ``style`` (see module docstring); None if absent."""
    if style not in STYLES:
        raise ValueError(f"extract_answer: style must be one of {STYLES}, got {style!r}")
    if style == "tag":
        return extract_tagged(text)
    if style == "boxed":
        return extract_boxed(text)
    if style == "gsm8k":
        return extract_gsm8k(text)
    if style == "choice":
        return extract_choice(text)
    if style == "number":
        return extract_last_number(text)
    for fn in (extract_boxed, extract_gsm8k, extract_tagged, extract_answer_is,
               extract_last_number):
        got = fn(text)
        if got:
            return got
    return None


# ---------------------------------------------------------------------------------------
# Normalisation

_UNITS = ("cm", "mm", "km", "m", "kg", "g", "mg", "lb", "lbs", "oz", "ml", "l", "s", "sec",
          "secs", "min", "mins", "h", "hr", "hrs", "ft", "in", "mph", "cents", "dollars",
          "degrees", "units", "inches", "feet", "meters", "hours", "minutes", "seconds")


def _unwrap_text(s: str) -> str:
    """``\\text{abc}`` / ``\\mathrm{}`` / ``\\textbf{}`` / ``\\mbox{}`` -> their content."""
    out = s
    for _ in range(8):
        m = re.search(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{", out)
        if not m:
            break
        got = _balanced(out, m.end() - 1)
        if got is None:
            break
        out = out[:m.start()] + got[0] + out[got[1]:]
    return out


def _unbox(s: str) -> str:
    for _ in range(8):
        m = re.fullmatch(r"\\(?:boxed|fbox)\s*(\{.*\})", s, re.DOTALL)
        if not m:
            break
        got = _balanced(m.group(1), 0)
        if got is None or got[1] != len(m.group(1)):
            break
        s = got[0].strip()
    return s


def normalize(answer: str) -> str:
    """Canonical text of an answer: wrappers, spacing, units and separators removed."""
    s = answer.strip()
    s = s.replace("\u2212", "-").replace("\u00d7", "\\times ").replace("\u00b7", "\\cdot ")
    s = s.replace("\u03c0", "\\pi ").replace("\u221e", "\\infty ").replace("\u00b0", "")
    for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        while len(s) > len(left) + len(right) and s.startswith(left) and s.endswith(right):
            s = s[len(left):len(s) - len(right)].strip()
    s = _unbox(s)
    s = _unwrap_text(s)
    s = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])", "", s)
    s = re.sub(r"\\[,;:! ]", "", s)
    s = s.replace("~", "")
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?", "", s)
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    s = s.replace("{,}", ",")
    s = s.strip()
    s = re.sub(r"\.$", "", s).strip()
    # "x = 5" -> "5": a single-variable left-hand side names the answer, it is not part of it.
    m = re.fullmatch(r"[A-Za-z](?:_\{?\w+\}?)?\s*=\s*(.+)", s, re.DOTALL)
    if m:
        s = m.group(1).strip()
    s = _strip_units(s)
    if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    return s.strip()


def _strip_units(s: str) -> str:
    m = re.fullmatch(r"([-+]?[\d.,]*\d(?:/\d+)?)(\s*)([A-Za-z][A-Za-z\s.^0-9]*)", s)
    if not m:
        return s
    num, space, unit = m.groups()
    first = re.match(r"[A-Za-z]+", unit).group(0)
    if space or first.lower() in _UNITS:
        return num
    return s


# ---------------------------------------------------------------------------------------
# Numbers


def parse_number(answer: str) -> Optional[Fraction]:
    """An exact rational from a normalised answer: ``-3``, ``0.25``, ``1/2``,
    ``\\frac{1}{2}``, ``-\\frac12``, ``2\\frac{1}{2}`` (mixed), ``1,000``; else None."""
    s = answer.replace(" ", "")
    if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    m = re.fullmatch(r"([-+]?)(\d+(?:\.\d*)?|\.\d+)(?:e([-+]?\d{1,3}))?", s)
    if m:
        value = Fraction(m.group(2)) * (Fraction(10) ** int(m.group(3) or 0))
        return -value if m.group(1) == "-" else value
    m = re.fullmatch(r"([-+]?)(\d+)/(\d+)", s)
    if m and int(m.group(3)) != 0:
        value = Fraction(int(m.group(2)), int(m.group(3)))
        return -value if m.group(1) == "-" else value
    m = re.fullmatch(r"([-+]?)(\d*)\\frac(?:\{(\d+)\}|(\d))(?:\{(\d+)\}|(\d))", s)
    if m:
        num, den = int(m.group(3) or m.group(4)), int(m.group(5) or m.group(6))
        if den == 0:
            return None
        value = Fraction(num, den) + int(m.group(2) or 0)
        return -value if m.group(1) == "-" else value
    return None


# ---------------------------------------------------------------------------------------
# LaTeX -> sympy, without eval

_MAX_EXPONENT = 1000
_MAX_FACTORIAL = 200
_MAX_LEN = 400

_FUNCTIONS = {
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "cot": sympy.cot,
    "sec": sympy.sec, "csc": sympy.csc, "arcsin": sympy.asin, "arccos": sympy.acos,
    "arctan": sympy.atan, "ln": sympy.log, "log": sympy.log, "exp": sympy.exp,
}
_CONSTANTS = {"pi": sympy.pi, "infty": sympy.oo, "inf": sympy.oo, "infinity": sympy.oo}
_TOKEN = re.compile(r"\s*(\d+\.?\d*|\.\d+|\\[a-zA-Z]+|\\.|[a-zA-Z]|\S)")


class _ParseError(ValueError):
    pass


class _Parser:
    """Recursive descent over a token list; builds sympy expressions."""

    def __init__(self, text: str):
        self.toks = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m:
                break
            self.toks.append(m.group(1))
            pos = m.end()
        self.toks = self._words(self.toks)
        self.i = 0

    @staticmethod
    def _words(toks: list[str]) -> list[str]:
        """Joins plain letters spelling a function/constant name (``sqrt``, ``pi``)."""
        names = sorted(set(_FUNCTIONS) | set(_CONSTANTS) | {"sqrt"}, key=len, reverse=True)
        out, i = [], 0
        while i < len(toks):
            for name in names:
                if "".join(toks[i:i + len(name)]) == name and all(
                        len(t) == 1 and t.isalpha() for t in toks[i:i + len(name)]):
                    out.append("\\" + name)
                    i += len(name)
                    break
            else:
                out.append(toks[i])
                i += 1
        return out

    def peek(self) -> Optional[str]:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, expected: Optional[str] = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise _ParseError(f"expected {expected!r}, got {tok!r}")
        self.i += 1
        return tok

    def parse(self):
        value = self.expr()
        if self.peek() is not None:
            raise _ParseError(f"unexpected {self.peek()!r}")
        return value

    def expr(self):
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs = self.term()
            value = value + rhs if op == "+" else value - rhs
        return value

    _STARTS = ("(", "\\frac", "\\sqrt", "|", "\\lvert", "{")

    def _starts_atom(self, tok: Optional[str]) -> bool:
        if tok is None:
            return False
        if tok[0].isdigit() or tok[0] == "." or (len(tok) == 1 and tok.isalpha()):
            return True
        if tok in self._STARTS:
            return True
        return tok.startswith("\\") and tok[1:] in (set(_FUNCTIONS) | set(_CONSTANTS))

    def term(self):
        value = self.unary()
        while True:
            tok = self.peek()
            if tok in ("*", "\\cdot", "\\times"):
                self.take()
                value = value * self.unary()
            elif tok in ("/", "\\div"):
                self.take()
                den = self.unary()
                if den == 0:
                    raise _ParseError("division by zero")
                value = value / den
            elif self._starts_atom(tok) and tok != "|":
                value = value * self.unary()
            else:
                return value

    def unary(self):
        if self.peek() == "-":
            self.take()
            return -self.unary()
        if self.peek() == "+":
            self.take()
            return self.unary()
        return self.power()

    def power(self):
        base = self.postfix()
        if self.peek() in ("^", "**"):
            self.take()
            exponent = self.group() if self.peek() == "{" else self.unary()
            if exponent.is_number and abs(sympy.N(exponent)) > _MAX_EXPONENT:
                raise _ParseError("exponent too large")
            return sympy.Pow(base, exponent)
        return base

    def postfix(self):
        value = self.atom()
        while self.peek() == "!":
            self.take()
            if not (value.is_Integer and 0 <= value <= _MAX_FACTORIAL):
                raise _ParseError("factorial of a non-integer or too large a number")
            value = sympy.factorial(value)
        return value

    def group(self):
        """A TeX argument: ``{expr}`` or one token (``\\frac12`` takes one digit each)."""
        tok = self.peek()
        if tok == "{":
            self.take()
            value = self.expr()
            self.take("}")
            return value
        if tok is not None and tok[0].isdigit() and len(tok) > 1:
            self.toks[self.i] = tok[1:]
            return sympy.Integer(int(tok[0]))
        return self.atom()

    def atom(self):
        tok = self.take()
        if tok[0].isdigit() or tok[0] == ".":
            return sympy.Rational(Fraction(tok))
        if len(tok) == 1 and tok.isalpha():
            return sympy.Symbol(tok)
        if tok in ("(", "{", "["):
            value = self.expr()
            self.take({"(": ")", "{": "}", "[": "]"}[tok])
            return value
        if tok in ("|", "\\lvert"):
            value = self.expr()
            self.take("|" if tok == "|" else "\\rvert")
            return sympy.Abs(value)
        if tok == "\\frac":
            num, den = self.group(), self.group()
            if den == 0:
                raise _ParseError("division by zero")
            return num / den
        if tok == "\\sqrt":
            index = None
            if self.peek() == "[":
                self.take()
                index = self.expr()
                self.take("]")
            arg = self.group()
            return sympy.sqrt(arg) if index is None else sympy.root(arg, index)
        name = tok[1:]
        if name in _CONSTANTS:
            return _CONSTANTS[name]
        if name in _FUNCTIONS:
            base = None
            if name == "log" and self.peek() == "_":
                self.take()
                base = self.group()
            arg = self.group() if self.peek() == "{" else self.power()
            return sympy.log(arg, base) if base is not None else _FUNCTIONS[name](arg)
        raise _ParseError(f"unsupported token {tok!r}")


def parse_latex(text: str):
    """A sympy expression for a LaTeX / plain math answer, or None if it does not parse."""
    if len(text) > _MAX_LEN:
        return None
    try:
        return _Parser(text).parse()
    except Exception:  # noqa: BLE001 - sympy raises many types; any failure = "not parsable"
        return None


# ---------------------------------------------------------------------------------------
# Equivalence

def _split_top(s: str) -> list[str]:
    """Splits on commas outside brackets."""
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts]


def _brackets(s: str) -> tuple[str, str, str]:
    """(open, body, close) when ``s`` is wrapped in one bracket pair spanning it all."""
    for left in ("\\{", "(", "["):
        if s.startswith(left):
            for right in ("\\}", ")", "]"):
                if s.endswith(right) and len(s) > len(left) + len(right) - 1:
                    body = s[len(left):len(s) - len(right)]
                    depth = 0
                    for ch in body:
                        depth += ch in "([{"
                        depth -= ch in ")]}"
                        if depth < 0:
                            break
                    if depth == 0:
                        return left, body, right
    return "", s, ""


def _scalar_equal(a: str, b: str) -> bool:
    if a == b:
        return True
    if re.fullmatch(r"[A-Za-z ]{2,}", a) and re.fullmatch(r"[A-Za-z ]{2,}", b):
        return a.lower().split() == b.lower().split()
    na, nb = parse_number(a), parse_number(b)
    if na is not None and nb is not None:
        return na == nb
    ea, eb = parse_latex(a), parse_latex(b)
    if ea is None or eb is None:
        return False
    return _sympy_equal(ea, eb)


def _sympy_equal(ea, eb) -> bool:
    try:
        if ea == eb:
            return True
        if ea.is_number and eb.is_number:
            if ea.has(sympy.oo, -sympy.oo, sympy.zoo) or eb.has(sympy.oo, -sympy.oo, sympy.zoo):
                return False
            diff = complex(sympy.N(ea - eb, 30))
            scale = max(1.0, abs(complex(sympy.N(eb, 30))))
            return abs(diff) <= 1e-12 * scale
        return sympy.simplify(ea - eb) == 0
    except Exception:  # noqa: BLE001 - sympy raises many types; any failure = "not equal"
        return False


def _math_equal(a: str, b: str) -> bool:
    if _scalar_equal(a, b):
        return True
    oa, body_a, ca = _brackets(a)
    ob, body_b, cb = _brackets(b)
    parts_a, parts_b = _split_top(body_a), _split_top(body_b)
    if len(parts_a) == 1 and len(parts_b) == 1:
        if oa and oa == ob and ca == cb:
            return _scalar_equal(body_a, body_b)
        return False
    if len(parts_a) != len(parts_b):
        return False
    if oa or ob:
        if (oa, ca) != (ob, cb):
            return False
        if oa == "\\{":
            return _multiset_equal(parts_a, parts_b)
        return all(_math_equal(x, y) for x, y in zip(parts_a, parts_b))
    return _multiset_equal(parts_a, parts_b)


def _multiset_equal(xs: list[str], ys: list[str]) -> bool:
    left = list(ys)
    for x in xs:
        for j, y in enumerate(left):
            if _math_equal(x, y):
                del left[j]
                break
        else:
            return False
    return not left


def answers_equal(pred: Optional[str], ref: str, mode: str = "math",
                  backend: str = "sympy") -> bool:
    """Whether answer ``pred`` matches reference ``ref``.

    mode: ``"math"`` (numbers, LaTeX, tuples, text) or ``"choice"`` (choice letters; ``(B)``,
    ``b``, ``\\text{(B)}`` all read as ``B``). backend: ``"sympy"`` (this module) or
    ``"math_verify"`` (the optional ``math-verify`` package).
    """
    if mode not in MODES:
        raise ValueError(f"answers_equal: mode must be one of {MODES}, got {mode!r}")
    if backend not in ("sympy", "math_verify"):
        raise ValueError(f"answers_equal: backend must be 'sympy' or 'math_verify', "
                         f"got {backend!r}")
    if pred is None:
        return False
    if mode == "choice":
        a, b = _choice_letter(pred, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"), \
            _choice_letter(ref, "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
        return a is not None and a == b
    if backend == "math_verify":
        return _math_verify_equal(pred, ref)
    return _math_equal(normalize(pred), normalize(ref))


def _math_verify_equal(pred: str, ref: str) -> bool:
    try:
        import math_verify
    except ImportError:
        raise ImportError("answers_equal(backend='math_verify') needs the math-verify "
                          "package: pip install math-verify") from None
    gold = math_verify.parse(f"${ref}$")
    answer = math_verify.parse(f"${pred}$")
    return bool(math_verify.verify(gold, answer))
