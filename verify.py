r"""Rule-based answer verifier: the RL reward (and the eval metric) of longcot.

What it does
    extract_answer(text)            the final answer of a response (None if none), see 1. below
    grade(text, gold, kind)         Grade(correct, reason, extracted); never raises
    is_correct(text, gold, kind)    grade(...).correct
    grade_batch(texts, golds, kinds, workers, timeout)
                                    the same on worker processes, with a per-item time limit
    kinds: "math" (MATH-style LaTeX), "choice" (MMLU-Pro letters A-J) and the TheoremQA answer
    types "integer", "float", "bool", "list" ("list of integer", "list of float"), "option".

How to run
    python verify.py --text 'so the answer is $\boxed{\frac12}$.' --gold 0.5
    python -m pytest -q tests/test_verify.py        python bench/bench_verify.py [--compare math-verify]

Safety. Model text is never executed: there is no eval/exec/sympify/parse_expr/parse_latex here.
A small recursive-descent parser reads a whitelisted subset of LaTeX/plain math and builds sympy
objects directly. Everything that can blow up (powers, factorials, long literals, deep nesting) is
size-checked before sympy sees it, so `is_correct` alone stays bounded; `grade_batch` adds a hard
per-item timeout on top (a worker that overruns is killed and replaced).

The pipeline (math kind), top to bottom in this file:
  1. extract   after a closing </think>, the answer given there (else the thinking's); within that,
               an "answer is" / "Answer:" statement after the last box, else the last complete
               \boxed{}/\fbox{} (joined with the boxes just before it when only ",", ";", "and",
               "\quad" separate them), else a final $...$ that ends the text. The gold gets the
               same box extraction, so "$5$", "\boxed{5}" or a whole reference solution all work.
  2. normalise MATH conventions: \dfrac, \left, spaces, units, degrees, %, \$, thousands separators,
               repeating decimals, one spelling for relations (\le, \ge, \ne, <, >), the empty set
               and \mathbb{R}, number words, a.m./p.m.; equal strings -> correct.
  3. parse     plain numbers -> exact rationals; otherwise values: number/expression, equation,
               inequality (as intervals), tuple/interval/ratio, set or list of solutions, named list
               ("m = 4, k = 9"), union, matrix, text.
  4. compare   structurally, with sympy for the scalars (exact for rationals, 50-digit numerics for
               irrational constants, random-point identity testing for expressions with variables).

The conventions (the labels of issue 14; each has right and wrong cases in tests/verify_cases.py):
  1. Equivalence, not string equality: 0.5 = \frac12, \sqrt{117} = 3\sqrt{13}, terms in any order,
     equivalent equations (y = 2x + 3 vs 2x - y + 3 = 0) and inequalities (7 \ge y, -y \ge -7, y \le 7).
     Variables count as positive reals in identity tests (sqrt(x^2) = x).
  2. The final answer counts (see 1. extract above): boxes in a <think> block that a later answer
     overrides do not count; an explicit final statement after intermediate boxes does.
  3. No answer means false: an empty or "?" box, an empty string, a text cut off before any final
     answer (even when the gold number appears in it).
  4. Sets and lists of solutions are unordered, each gold element matched once ("1, 2" != "1, 1");
     tuples are ordered; \pm means both signs. Labels are optional: "x = 3" = "y = 3" = 3, |CD| = 6
     is 6, (a,b) = (2,5) is (2,5), A:B = 3:8 is 3:8; a named list "m = 4, k = 9" matches by name, or
     in order when unnamed; groups separated by ";" are elements ("a=3,b=1;a=5,b=1" = "(3,1),(5,1)").
  5. Intervals are exact (brackets matter, unions in any order, \mathbb{R} = (-\infty,\infty)), and
     an inequality matches the interval(s) of the same set ("-3 \le y \le 4" = [-3,4], "x \ne 3" =
     (-\infty,3)\cup(3,\infty), "x < -1 or x > 5" = the union); the point (1,3) is not [1,3].
  6. Decorations are optional (\%, ^\circ, \$, units: "15 cm^2" = 15), the scale is not
     (0.28 != 28\%). Degrees are never converted to radians.
  7. No tolerance: 9999 != 10000, 2^{100}+1 != 2^{100}; decimal approximations of irrationals are
     wrong, exact decimals of rationals right (0.\overline{3} = 1/3).
  8. Hedging is wrong ("3 or 5" for gold 3) unless the gold is the list "3, 5".
  9. Mixed numbers are sums (2\frac12 = 2.5); "\sqrt 13" means sqrt(13).
 10. Pathological inputs do not hang: whatever cannot be computed cheaply is judged false.

Departures from the paper: Yeo et al. (2025) reward correctness with a rule-based checker in their
OpenRLHF fork; this one is written from scratch. It is strict for MATH (exact equality, no numeric
tolerance between a decimal and an irrational), it refuses to evaluate anything oversized instead of
relying on a timeout alone, and TheoremQA floats use a 1% relative tolerance (see _float_ok).
"""
from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass, fields
from fractions import Fraction
from functools import lru_cache
from typing import NamedTuple

import sympy as sp


@dataclass
class Args:  # the CLI: python verify.py --text ... --gold ... --kind ...
    text: str = r"... so the answer is $\boxed{\frac12}$."  # the model response to grade
    gold: str = "0.5"  # the gold answer (MATH-style LaTeX, not boxed)
    kind: str = "math"  # answer type: math, choice, integer, float, bool, list, option


MAX_ANSWER_CHARS = 2000  # longer answers are only compared as strings (the longest MATH gold has 159 chars)
MAX_DIGITS = 20000  # largest exact number we let sympy build (2^4950 in MATH train has 1490 digits)
MAX_DEPTH = 60  # parser nesting limit (keeps Python recursion far from its limit)
NUMERIC_DPS = 50  # digits for numeric evaluation of irrational constants
NUMERIC_RTOL = 1e-30  # relative tolerance at 50 digits: absorbs evaluation rounding, nothing else
NUMERIC_ATOL = 1e-100  # absolute floor: sympy reports an exact cancellation (golden ratio - 2/(sqrt5-1)) as ~1e-160
FLOAT_RTOL = 1e-2  # TheoremQA "float": 1% relative, see _float_ok
DEFAULT_TIMEOUT = 5.0  # seconds per item in grade_batch


class Grade(NamedTuple):
    correct: bool  # does the final answer equal the gold answer?
    reason: str  # short machine-readable why: "equal", "mismatch", "no answer", "timeout", ...
    extracted: str | None  # the final answer found in the response (None if none)


class _Refuse(Exception):
    """Input outside what we are willing to parse or evaluate (too big, unknown token, ...)."""


def _cache(maxsize: int):
    """lru_cache that skips oversized string arguments (a degenerate policy must not fill RAM)."""
    def deco(f):
        cached = lru_cache(maxsize)(f)

        def g(*args, **kw):
            big = any(isinstance(a, str) and len(a) > MAX_ANSWER_CHARS for a in (*args, *kw.values()))
            return f(*args, **kw) if big else cached(*args, **kw)
        g.cache_clear, g.__doc__ = cached.cache_clear, f.__doc__
        return g
    return deco


# ----------------------------------------------------------------------------------------------
# 1. Extraction
# ----------------------------------------------------------------------------------------------
_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_BRACE_RE = re.compile(r"\\.|[{}]", re.S)
_ANSWER_IS_RE = re.compile(r"(?i)\banswer(?:\s+is\s*:?|\s*:)[ \t]*")
_DELIM_RE = re.compile(r"\\\$|\$\$|\$|\\\[|\\\]|\\\(|\\\)")
_CLOSER = {"$$": "$$", "$": "$", "\\[": "\\]", "\\(": "\\)"}
_JOINER_RE = re.compile(r"[\s$]*(?:,|;|and|\\q?quad|\\text\{\s*and\s*\})[\s$]*")  # between boxes of one list
_END_RE = re.compile(r"[\s.,;:!*)]*|[^$]{0,40}[.!][\s*]*")  # what may follow a final unboxed $...$
MAX_BOXES = 32  # adjacent boxes joined into one list answer


def _brace_group(s: str, i: int) -> int:
    """s[i] is an opening brace: index just past its match (escaped braces ignored), or -1."""
    depth = 0
    for m in _BRACE_RE.finditer(s, i):
        c = m.group()
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return m.end()
    return -1


def _box_at(text: str, j: int) -> tuple[str, int] | None:
    """The box whose command ends at j: (content, end index), or None if it is not complete."""
    k = j
    while k < len(text) and text[k] in " \t":
        k += 1
    if k < len(text) and text[k] == "{":
        end = _brace_group(text, k)
        if end != -1:
            return text[k + 1:end - 1].strip(), end
    elif k > j:  # "\boxed 5": one space-delimited token
        m = re.match(r"[^\s$]+", text[k:k + 200])
        if m:
            return m.group(), k + m.end()
    return None


def _last_boxed(text: str) -> tuple[str, int] | None:
    """The last complete box (content, end index), with the boxes just before it that are joined to it
    only by ",", "and", "\\quad" (one list answer: "$\\boxed{2}$ and $\\boxed{5}$" -> "2, 5")."""
    found = [(m.start(), m.end()) for m in _BOX_RE.finditer(text)]
    for n in range(len(found) - 1, max(-1, len(found) - 4), -1):  # at most 3 tries keeps a 1 MB input linear
        box = _box_at(text, found[n][1])
        if box is None:
            continue
        parts, end, start = [box[0]], box[1], found[n][0]
        for i, j in reversed(found[max(0, n - MAX_BOXES):n]):
            prev = _box_at(text, j)
            if prev is None or prev[1] > start or not _JOINER_RE.fullmatch(text[prev[1]:start]):
                break
            parts.append(prev[0])
            start = i
        return ", ".join(reversed(parts)) if len(set(parts)) > 1 else parts[0], end
    return None


def _math_segments(text: str):
    """(content, end) of complete $...$, $$...$$, \\[...\\], \\(...\\) segments, in order (one linear scan)."""
    opener, start = None, 0
    for m in _DELIM_RE.finditer(text):
        d = m.group()
        if d == "\\$":  # an escaped dollar sign is text
            continue
        if opener is None:
            if d in _CLOSER:
                opener, start = d, m.end()
        elif d == _CLOSER[opener]:
            yield text[start:m.start()].strip(), m.end()
            opener = None


def _statement(text: str, after: int) -> str | None:
    """What follows the last "the answer is" / "Answer:" that starts at or after `after`, on its line."""
    last = None
    for last in _ANSWER_IS_RE.finditer(text, after):
        pass
    if last is None:
        return None
    rest = text[last.end():last.end() + 1000].lstrip()
    line = rest if rest.startswith(tuple(_CLOSER)) else rest.split("\n", 1)[0]
    inner = next(_math_segments(line), None)
    ans = re.sub(r"^[\s*]+|[\s.*]+$", "", inner[0] if inner is not None else line)  # **12**. -> 12
    return ans or None


def _final_answer(text: str) -> str | None:
    box = _last_boxed(text)
    said = _statement(text, box[1] if box else 0)  # an explicit statement after the last box overrides it
    if said is not None and (box is None or re.match(r"[-\d\\$([{]|[a-zA-Z]\s*=", said)):
        return said
    if box is not None:
        return box[0]
    last = None
    for last in _math_segments(text):
        pass
    if last is not None and _END_RE.fullmatch(text, last[1]):  # a final $...$ that ends the response
        return last[0]
    return None


def extract_answer(text: str) -> str | None:
    r"""The final answer of a response. After a closing </think>, the answer given there wins (else
    the thinking's). Within a part: an "answer is" / "Answer:" statement after the last box, else the
    last complete \boxed{} / \fbox{} (with the boxes joined to it by ",", "and", "\quad"), else a
    final $...$ that ends the text (a response cut off mid-sentence or inside an open <think> block
    has no answer)."""
    if not isinstance(text, str):
        return None
    k = text.rfind("</think>")
    if text.rfind("<think>") > k:  # cut off while still thinking: no final answer yet
        return None
    if k != -1:
        ans = _final_answer(text[k + 8:])
        return ans if ans is not None else _final_answer(text[:k])
    return _final_answer(text)


# ----------------------------------------------------------------------------------------------
# 2. Normalisation (MATH conventions) -> (canonical string, had a percent sign)
# ----------------------------------------------------------------------------------------------
_UNICODE = {"\u2212": "-", "\u2013": "-", "\u00d7": r"\times ", "\u00b7": r"\cdot ", "\u00f7": r"\div ",
            "\u03c0": r"\pi ", "\u221e": r"\infty ", "\u221a": r"\sqrt", "\u2264": r"\le ", "\u2265": r"\ge ",
            "\u00b0": r"^\circ", "\u00a0": " ", "\u222a": r"\cup ", "\u2260": r"\ne ", "\u2205": r"\emptyset "}
_TEXT_RE = re.compile(r"\\(?:text|textbf|textit|textnormal|textrm|mbox|mathrm|mathbf|mathit|boldsymbol|"
                      r"operatorname|emph)\s*\{([^{}]*)\}(\^\{?\d\}?)?")
_DROP_RE = re.compile(r"\\(?:left|right)[.]|\\(?:left|right|[bB]igg?[lr]?|displaystyle|textstyle)(?![a-zA-Z])")
_SPACE_RE = re.compile(r"\\\\|\\[,;:> !]|\\q?quad(?![a-zA-Z])|~")  # \\\\ (matrix row break) is kept
_DEGREE_RE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree")
_UNIT_WORDS = {"cm", "mm", "km", "m", "ft", "in", "yd", "mi", "kg", "g", "mg", "lb", "lbs", "oz", "s", "ms",
               "h", "hr", "hrs", "min", "sec", "l", "ml", "mph", "cc", "sq", "cu", "m/s", "km/h"}
_UNIT_TAIL_RE = re.compile(r"(?<![\^_]\d)(?<=[\d}).])\s+([a-zA-Z/]+\.?(?:\s+[a-zA-Z/]+\.?)*)\s*(?:\^\{?\d\}?)?\s*$")


_OVERLINE_RE = re.compile(r"(\d{0,50})\.(\d{0,50})\\(?:overline|bar)\{(\d{1,50})\}")


_AMPM_RE = re.compile(r"([aApP])\.?\s?[mM]\.?(?![a-zA-Z])")  # a.m. / PM in times
_CANON = [(re.compile(p), c) for p, c in [
    (r"\\(?:leqslant|leqq|leq|le)(?![a-zA-Z])|<=", r"\\le "), (r"\\(?:geqslant|geqq|geq|ge)(?![a-zA-Z])|>=", r"\\ge "),
    (r"\\(?:neq|ne)(?![a-zA-Z])|!=", r"\\ne "), (r"\\lt(?![a-zA-Z])", "<"), (r"\\gt(?![a-zA-Z])", ">"),
    (r"\\(?:varnothing|emptyset)(?![a-zA-Z])|\\\{\s*\\\}", r"\\emptyset "),
    (r"\\mathbb\s*\{\s*R\s*\}|\\mathbb\s*R(?![a-zA-Z])", r"(-\\infty,\\infty)")]]
_NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                 "sixteen seventeen eighteen nineteen twenty").split()
_WORDS = {**{w: str(i) for i, w in enumerate(_NUMBER_WORDS)},  # a whole answer spelled out -> canonical
          **{w: str(10 * i) for i, w in enumerate("thirty forty fifty sixty seventy eighty ninety".split(), 3)},
          **dict.fromkeys(["emptyset", "theemptyset", "nosolution", "nosolutions"], r"\emptyset"),
          **dict.fromkeys(["allrealnumbers", "allreals", "\\mathbb{r}"], r"(-\infty,\infty)")}


def _repeating(m) -> str:
    """0.1\\overline{6} -> \\frac{1}{6} (a repeating decimal is an exact rational)."""
    whole, fixed, rep = m.groups()
    x = Fraction(int(whole or 0)) + Fraction(int(fixed or 0), 10 ** len(fixed))
    x += Fraction(int(rep), (10 ** len(rep) - 1) * 10 ** len(fixed))
    return f"\\frac{{{x.numerator}}}{{{x.denominator}}}"


def _drop_text(s: str) -> str:
    r"""\text{..}-like wrappers: units after a value are dropped ("5\text{ cm}" -> "5"), connectives
    become commas ("1 \text{ or } 2" -> "1,2"), anything else is unwrapped ("\text{(C)}" -> "(C)")."""
    for _ in range(50):
        m = _TEXT_RE.search(s)
        if m is None:
            break
        content, before = m.group(1), s[:m.start()].strip()
        if content.strip(" ,").lower() in ("and", "or", ""):
            repl = "," if content.strip() else ""
        elif _AMPM_RE.fullmatch(content.strip()):  # 10:30\text{ a.m.}: part of the time, not a unit
            repl = content.strip()
        elif before and re.search(r"[\w}).]$", before) and re.fullmatch(r"[\sa-zA-Z.,/]*", content):
            repl = ""  # a unit (and its ^2 / ^3)
        else:
            repl = content + (m.group(2) or "")
        s = s[:m.start()] + " " + repl + " " + s[m.end():]
    return s


@_cache(16384)
def _normalize(s: str) -> tuple[str, bool]:
    """MATH-style answer -> (canonical string, had a percent sign). Pure string work, linear time."""
    s = s.strip()
    if len(s) > MAX_ANSWER_CHARS:
        return s, False
    for k, v in _UNICODE.items():
        s = s.replace(k, v)
    s = _DROP_RE.sub("", s)
    s = _SPACE_RE.sub(lambda m: m.group() if m.group() == "\\\\" else "" if m.group() == "\\!" else " ", s)
    s = s.replace("{,}", ",")
    s = re.sub(r"\\[dtc]frac(?![a-zA-Z])", r"\\frac", s)
    s = re.sub(r"\\[dt]binom(?![a-zA-Z])", r"\\binom", s)
    s = re.sub(r"\\phantom\s*(?:\{[^{}]*\}|.)", "", s)
    s = _DEGREE_RE.sub("", s)
    s = _OVERLINE_RE.sub(_repeating, s)
    pct = "%" in s
    for pattern, canonical in _CANON:  # one spelling for relations, the empty set and R
        s = pattern.sub(canonical, s)
    s = s.replace(r"\%", "").replace("%", "").replace(r"\$", "").replace("$", "")
    s = _drop_text(s)
    s = re.sub(r"(?<=\d)\s*" + _AMPM_RE.pattern, lambda m: m.group(1).lower() + "m", s)  # 10:30 A.M. -> 10:30am
    s = re.sub(r"(?i)\s+(?:and|or)\s+", ",", s)
    s = re.sub(r"^\s*(?:\\approx|\\therefore|=)\s*", "", s)
    s = re.split(r"\\approx(?![a-zA-Z])", s)[0]  # "\frac13 \approx 0.333": the exact part is the answer
    s = re.sub(r"^\s*[a-zA-Z]\s*\\in(?![a-zA-Z])\s*", "", s)
    m = _UNIT_TAIL_RE.search(s)
    if m and all(w.lower().rstrip(".") in _UNIT_WORDS or len(w) >= 3 for w in m.group(1).split()):
        s = s[:m.start()]
    # keep the one space that separates a command from a following letter (\sin x), drop the rest
    s = re.sub(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])", "\\1\x00", s)
    s = re.sub(r"\s+", "", s).replace("\x00", " ")
    s = re.sub(r",+", ",", s).strip(",")
    s = re.sub(r"[.,;]+$", "", s)
    s = re.sub(r"_\{(\w+)\}$", r"_\1", s)  # base-n answers: 4210_{5} -> 4210_5
    s = re.sub(r"\^\{(\w)\}(?!\d)", r"^\1", s)  # x^{2} -> x^2 (not x^{2}3 -> x^23)
    if re.fullmatch(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):  # 1,000 -> 1000, but (1,2) is a tuple
        s = s.replace(",", "")
    s = re.sub(r"\{(-?\d{1,3}(?:,\d{3})+)\}", lambda m: m.group().replace(",", ""), s)  # \frac{1}{20,000}
    m = re.fullmatch(r"\(([A-Za-z])\)|([A-Z])\)", s)  # (C) -> C
    if m:
        s = m.group(1) or m.group(2)
    return _WORDS.get(s.lower(), s), pct


# ----------------------------------------------------------------------------------------------
# 3. Parsing: our own recursive descent over whitelisted tokens -> sympy objects (no eval)
# ----------------------------------------------------------------------------------------------
_TOKEN_RE = re.compile(r"(?P<num>\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)|(?P<cmd>\\[a-zA-Z]+|\\[{}|])"
                       r"|(?P<word>[a-zA-Z]+)|(?P<op>[-+*/^_()\[\]{},!|=])|(?P<sp>\s+)")
_FUNCS = {"sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "cot": sp.cot, "sec": sp.sec, "csc": sp.csc,
          "arcsin": sp.asin, "arccos": sp.acos, "arctan": sp.atan, "sinh": sp.sinh, "cosh": sp.cosh,
          "tanh": sp.tanh, "log": sp.log, "ln": sp.log, "exp": sp.exp}
_INVERSE = {"sin": sp.asin, "cos": sp.acos, "tan": sp.atan}
_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta",
          "iota", "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "phi", "varphi", "chi", "psi",
          "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega"}
_CONSTANTS = {"pi": sp.pi, "infty": sp.oo, "imath": sp.I}
_ATOM_CMDS = {"frac", "sqrt", "binom", "lfloor", "lceil"} | set(_CONSTANTS) | _GREEK
_MAX_BITS = int(MAX_DIGITS * 3.33)


def _tokenize(s: str) -> list[tuple[str, str]]:
    toks, i = [], 0
    while i < len(s):
        m = _TOKEN_RE.match(s, i)
        if m is None:
            raise _Refuse(f"unexpected character {s[i]!r}")
        if m.lastgroup != "sp":
            toks.append((m.lastgroup, m.group()))
        i = m.end()
    return toks


def _check(x):
    """Refuse oversized exact numbers (also as the coefficient of an expression)."""
    c = x.as_coeff_Mul()[0] if isinstance(x, sp.Basic) else x
    if isinstance(c, sp.Rational) and (int(c.p).bit_length() > _MAX_BITS or int(c.q).bit_length() > _MAX_BITS):
        raise _Refuse("number too large")
    return x


def _height(x) -> float:
    """log10 of the largest integer appearing in a numeric sympy expression (>= 1 for pi, sqrt, ...)."""
    h = 1.0
    for a in x.atoms(sp.Rational):
        h = max(h, math.log10(max(abs(int(a.p)), int(a.q), 10)))
    return h


def _pow(b, e):
    if e.is_Rational and b.is_number and b not in (sp.S.Zero, sp.S.One, sp.S.NegativeOne):
        if abs(float(e)) * _height(b) > MAX_DIGITS:  # e.g. 9^{9^{9^9}}, 10^{10^{10}}: refuse before computing
            raise _Refuse("power too large")
    if e.is_Rational and (abs(e.p) > 10 ** 6 or e.q > 10 ** 6):  # x^{10^{100}}, \sqrt[10^{100}]{2}
        raise _Refuse("exponent too large")
    return _check(sp.Pow(b, e))


def _factorial(n):
    if n.is_number and not (n.is_Integer and 0 <= n <= 2000):
        raise _Refuse("factorial too large")
    return sp.factorial(n)


def _number(t: str):
    mant, _, exp = t.lower().partition("e")
    if len(mant) > 1000 or (exp and abs(int(exp)) > 1000):
        raise _Refuse("literal too large")
    f = Fraction(t)  # exact: 0.1 is 1/10, so decimals and fractions compare exactly
    return sp.Rational(f.numerator, f.denominator)


class _Parser:
    """expr := term (('+'|'-') term)* ; term := unary (('*'|'/'|\\cdot|\\times|\\div) unary | power)* ;
    unary := ('-'|'+') unary | power ; power := primary '!'* ('^' exponent)? ;
    primary := number | letter | (expr) | {expr} | |expr| | \\frac A B | \\sqrt[n]{A} | \\binom A B |
               \\pi | \\infty | greek | func [^p] arg | \\lfloor expr \\rfloor | \\lceil expr \\rceil"""

    def __init__(self, s: str):
        self.toks, self.i, self.depth = _tokenize(s), 0, 0

    def peek(self) -> tuple[str, str]:
        return self.toks[self.i] if self.i < len(self.toks) else ("end", "")

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        self.i += 1
        return tok

    def expect(self, t: str):
        if self.take()[1] != t:
            raise _Refuse(f"expected {t!r}")

    def parse(self):
        e = self.expr()
        if self.i != len(self.toks):
            raise _Refuse(f"unexpected {self.peek()[1]!r}")
        return e

    def expr(self):
        x = self.term()
        while self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            y = self.term()
            x = _check(sp.Add(x, y if op == "+" else -y))
        return x

    def starts_atom(self, funcs: bool = True) -> bool:
        k, t = self.peek()
        if k == "num" or t in ("(", "{"):
            return True
        if k == "word":
            return funcs or t not in _FUNCS and t != "sqrt"
        return k == "cmd" and (t[1:] in _ATOM_CMDS or funcs and t[1:] in _FUNCS)

    def term(self):
        x = self.unary()
        while True:
            t = self.peek()[1]
            if t in ("*", r"\cdot", r"\times"):
                self.take()
                x = _check(sp.Mul(x, self.unary()))
            elif t in ("/", r"\div"):
                self.take()
                x = _check(sp.Mul(x, _pow(self.unary(), sp.S.NegativeOne)))
            elif self.starts_atom():  # implicit product: 2x, 2\pi, (a+5)(b+2)
                x = _check(sp.Mul(x, self.power()))
            else:
                return x

    def unary(self):
        self.enter()
        t = self.peek()[1]
        if t in ("-", "+"):
            self.take()
            x = self.unary()
            x = -x if t == "-" else x
        else:
            x = self.power()
        self.depth -= 1
        return x

    def enter(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Refuse("nested too deeply")

    def power(self):
        x = self.primary()
        while self.peek()[1] == "!":
            self.take()
            x = _factorial(x)
        if self.peek()[1] == "^":
            self.take()
            x = _pow(x, self.exponent())
        return x

    def exponent(self):
        k, t = self.peek()
        if t == "{":
            return self.group("{", "}")
        if t in ("-", "+"):
            self.take()
            e = self.exponent()
            return -e if t == "-" else e
        if k == "num":  # x^23 is x^{23} here (plain-text habit); LaTeX purists brace it anyway
            self.take()
            return _number(t)
        if k == "word":
            return self.one_char()
        return self.primary()

    def group(self, open_: str, close: str):
        self.expect(open_)
        e = self.expr()
        self.expect(close)
        return e

    def one_char(self):
        """LaTeX single-token argument: \\frac12 -> 1, 2 ; \\sqrt2 ; \\frac ab."""
        k, t = self.take()
        if len(t) > 1:
            self.i -= 1
            self.toks[self.i] = (k, t[1:])
        return _number(t[0]) if k == "num" else self.letter(t[0])

    def arg(self):
        k, t = self.peek()
        if t in ("{", "("):  # \frac{a}{b}; plain-text sqrt(2)
            return self.group(t, "}" if t == "{" else ")")
        if k in ("num", "word"):
            return self.one_char()
        if k == "cmd":
            self.take()
            return self.command(t[1:])
        raise _Refuse("missing argument")

    def letter(self, c: str):
        name = c
        if self.peek()[1] == "_":  # x_1, a_{n}
            self.take()
            k, t = self.peek()
            if t == "{":
                j = self.i + 1
                while j < len(self.toks) and self.toks[j][1] != "}":
                    j += 1
                name += "_" + "".join(t for _, t in self.toks[self.i + 1:j])
                self.i = j + 1
            elif k in ("num", "word"):
                self.take()
                name += "_" + t
            else:
                raise _Refuse("bad subscript")
            return sp.Symbol(name)
        return {"i": sp.I, "e": sp.E}.get(c) or sp.Symbol(c)

    def primary(self):
        self.enter()
        k, t = self.take()
        if k == "num":
            x = _number(t)
            if re.fullmatch(r"\d+", t) and self.peek()[1] == r"\frac":  # mixed number 1\frac{4}{5} = 9/5
                self.take()
                a, b = self.arg(), self.arg()
                proper = a.is_Integer and b.is_Integer and 0 < a < b
                x = _check(x + a / b if proper else x * a * _pow(b, sp.S.NegativeOne))
        elif k == "word":
            if t in _FUNCS or t == "sqrt":
                x = self.command(t)
            elif t in ("pi", "inf", "infty", "infinity"):
                x = sp.pi if t == "pi" else sp.oo
            elif len(t) <= 2:  # "xy" is x*y; longer words are text, not algebra
                self.i -= 1
                x = self.one_char()
            else:
                raise _Refuse(f"word {t!r}")
        elif t == "(":
            x = self.expr()
            self.expect(")")
        elif t == "{":
            x = self.expr()
            self.expect("}")
        elif t == "|":
            x = sp.Abs(self.expr())
            self.expect("|")
        elif k == "cmd":
            x = self.command(t[1:])
        else:
            raise _Refuse(f"unexpected {t!r}")
        self.depth -= 1
        return x

    def command(self, name: str):
        if name == "frac":
            a, b = self.arg(), self.arg()
            return _check(sp.Mul(a, _pow(b, sp.S.NegativeOne)))
        if name == "sqrt":
            n = None
            if self.peek()[1] == "[":
                self.take()
                n = self.expr()
                self.expect("]")
            # \sqrt 13 is meant as sqrt(13) (LaTeX would read sqrt(1)*3); \frac 34 keeps single digits
            a = _number(self.take()[1]) if self.peek()[0] == "num" else self.arg()
            return _pow(a, sp.S.Half if n is None else _pow(n, sp.S.NegativeOne))
        if name == "binom":
            n, r = self.arg(), self.arg()
            if n.is_number and not (n.is_Integer and r.is_Integer and 0 <= n <= 5000):
                raise _Refuse("binomial too large")
            return sp.binomial(n, r)
        if name in ("lfloor", "lceil"):
            x = self.expr()
            self.expect("\\r" + name[1:])
            return sp.floor(x) if name == "lfloor" else sp.ceiling(x)
        if name in _CONSTANTS:
            return _CONSTANTS[name]
        if name in _GREEK:
            return sp.Symbol(name)
        if name in _FUNCS:
            return self.function(name)
        raise _Refuse(f"unknown command \\{name}")

    def function(self, name: str):
        p = base = None
        if self.peek()[1] == "^":  # \sin^2 x
            self.take()
            p = self.exponent()
        if name == "log" and self.peek()[1] == "_":  # \log_2 8
            self.take()
            base = self.arg()
        if self.peek()[1] in ("(", "{"):
            a = self.group(self.peek()[1], ")" if self.peek()[1] == "(" else "}")
        else:  # \sin 5x \cos x: the argument is the product up to the next function, + or -
            a = self.power()
            while self.starts_atom(funcs=False):
                a = _check(sp.Mul(a, self.power()))
        if p == -1 and name in _INVERSE:
            return _INVERSE[name](a)
        f = sp.log(a, base) if base is not None else _FUNCS[name](a)
        return f if p is None else _pow(f, p)


@_cache(16384)
def _parse_expr(s: str):
    """A normalised scalar answer -> sympy expression, or None if it is not (our) algebra."""
    if not s or len(s) > MAX_ANSWER_CHARS:
        return None
    try:
        return _Parser(s).parse()
    except (_Refuse, ValueError, TypeError, ZeroDivisionError, RecursionError, ArithmeticError):
        return None


# ---- answers made of several parts -------------------------------------------------------------
def _split_top(s: str, sep: str) -> list[str]:
    """Split at `sep` outside any ( [ { brackets (intervals like [1,2) count as bracketed)."""
    parts, depth, last, i, n = [], 0, 0, 0, len(sep)
    while i < len(s):
        c = s[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and s.startswith(sep, i) and not (sep[-1].isalpha() and s[i + n:i + n + 1].isalpha()):
            parts.append(s[last:i])
            last = i + n
            i += n
            continue
        i += 1
    parts.append(s[last:])
    return parts


def _closing(s: str, i: int) -> int:
    """Index of the bracket that closes s[i] (any of ([{ / )]} ), or -1."""
    depth = 0
    for j in range(i, len(s)):
        if s[j] in "([{":
            depth += 1
        elif s[j] in ")]}":
            depth -= 1
            if depth == 0:
                return j
    return -1


_VAR_RE = re.compile(r"[a-zA-Z](?:_\w+)?|\\[a-zA-Z]+|[a-zA-Z]\([a-zA-Z]\)")
_MATRIX_RE = re.compile(r"\\begin\{([pbvB]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}", re.S)


def _expand_pm(s: str) -> list[str]:
    """"1 \\pm \\sqrt{2}" -> the two solutions; containers (sets, tuples, matrices) expand their own items."""
    container = s.startswith(("\\{", "\\begin")) or s[:1] in "([" and _closing(s, 0) == len(s) - 1
    if r"\pm" not in s and r"\mp" not in s or container:
        return [s]
    return [s.replace(r"\pm", "+").replace(r"\mp", "-"), s.replace(r"\pm", "-").replace(r"\mp", "+")]


_REL_RE = re.compile(r"\\(?:le|ge|ne)(?![a-zA-Z])|[<>]")  # relations, as _normalize spells them
_FLIP = {"<": ">", ">": "<", r"\le": r"\ge", r"\ge": r"\le", r"\ne": r"\ne"}
_LABEL_RE = re.compile(r"(?=.*[a-zA-Z])[a-zA-Z\\{}|(),:' ]{1,40}")  # AB, |CD|, (a,b), A:B, \overline{AB}


def _constant(v) -> bool:
    """A number (or a tuple / ratio of numbers): the kind of value a label can name."""
    return v[0] == "expr" and not v[1].free_symbols or v[0] == "seq" and all(_constant(x) for x in v[3])


def _inequality(s: str):
    r""""-3 \le y < 4", "7 \ge y", "-y > -4", "2<g(x)<9", "x \ne 3", "|x-2| > 3" -> ("ineq", var,
    intervals), each (lo, lo closed, hi, hi closed); a side linear in one variable is solved for it."""
    parts, ops = _REL_RE.split(s), _REL_RE.findall(s)
    if len(ops) > 2:
        return None
    vals = [_parse_expr(q) for q in parts]
    free = [i for i, v in enumerate(vals) if v is not None and v.free_symbols]
    if None in vals or len(free) != 1 or len(ops) == 2 and free != [1] or r"\ne" in ops and len(ops) > 1:
        return None
    k, f = free[0], vals[free[0]]
    rels = [(op, vals[i + 1]) if i == k else (_FLIP[op], vals[i]) for i, op in enumerate(ops)]  # f REL c
    branches = [rels]  # f satisfies all rels of one branch, for some branch
    if rels[0][0] == r"\ne":
        branches = [[("<", rels[0][1])], [(">", rels[0][1])]]
    elif isinstance(f, sp.Abs) and len(rels) == 1:  # |f| < c: -c < f < c ; |f| > c: f < -c or f > c
        (op, c), f = rels[0], f.args[0]
        branches = [[(_FLIP[op], -c), (op, c)]] if op in ("<", r"\le") else [[(_FLIP[op], -c)], [(op, c)]]
    (y,) = f.free_symbols if len(f.free_symbols) == 1 else (None,)
    a = f.diff(y) if y is not None else None
    if a is not None and not a.free_symbols and (a.is_positive or a.is_negative):
        b = sp.expand(f - a * y)  # a y + b REL c  ->  y REL' (c - b) / a
        if b.free_symbols:
            return None
        branches = [[(op if a.is_positive else _FLIP[op], (c - b) / a) for op, c in br] for br in branches]
        var = str(y)
    elif re.fullmatch(r"[a-zA-Z](?:_\w+)?\([a-zA-Z]\)", parts[k]):  # g(x) as a whole
        var = parts[k]
    else:
        return None
    out = []
    for br in branches:
        lo, lo_c, hi, hi_c = -sp.oo, False, sp.oo, False
        for op, c in br:
            if c.free_symbols or _numeric(c) is None and c not in (sp.oo, -sp.oo):
                return None
            if op in ("<", r"\le"):
                hi, hi_c = (c, op == r"\le") if hi == sp.oo else (None, None)
            else:
                lo, lo_c = (c, op == r"\ge") if lo == -sp.oo else (None, None)
        if hi is None or lo is None:  # two upper (or lower) bounds: not an interval we read
            return None
        out.append((lo, lo_c, hi, hi_c))
    return ("ineq", var, tuple(sorted(out, key=lambda iv: _sort_key(iv[0]))))


def _item(s: str):
    """One part of an answer -> value tuple: ("expr", e, var) | ("eq", lhs, rhs, labelled) |
    ("seq", "(", "]", items) (tuples, intervals; ":" ":" for ratios) | ("set", items) | ("matrix", rows)
    | ("ineq", var, intervals) | ("text", s)"""
    if s[:1] in "([" and s[-1:] in ")]" and s[1:].startswith("\\begin"):  # \left[\begin{array}..\right]
        s = s[1:-1]
    m = _MATRIX_RE.fullmatch(s)
    if m:
        rows = [r for r in m.group(2).split("\\\\") if r.strip()]
        cells = [[_item(c) for c in r.split("&")] for r in rows]
        return ("matrix", cells) if len({len(r) for r in cells}) == 1 else ("text", s.lower())
    if s.startswith("\\{") and s.endswith("\\}"):
        return ("set", [_item(p) for q in _split_top(s[2:-2], ",") for p in _expand_pm(q)])
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _closing(s, 0) == len(s) - 1:
        parts = _split_top(s[1:-1], ",")
        if len(parts) > 1:
            return ("seq", s[0], s[-1], [_item(p) for p in parts])
    if _REL_RE.search(s):
        return _inequality(s) or ("text", s.lower())
    ratio = _split_top(s, ":")
    if len(ratio) > 1 and "=" not in s:
        v = ("seq", ":", ":", [_item(p) for p in ratio])  # 3:8
        return v if _constant(v) else ("text", s.lower())
    sides = _split_top(s, "=")
    if len(sides) >= 2:
        rhs = _item(sides[-1])
        if _VAR_RE.fullmatch(sides[0]):  # x = 3 (or x = y = 3): keep the value, remember the name
            return ("expr", rhs[1], sides[0]) if rhs[0] == "expr" else rhs
        label = _LABEL_RE.fullmatch(sides[0]) is not None and _constant(rhs)  # |CD| = 6, (a,b) = (2,5)
        lhs = _parse_expr(sides[0])
        if len(sides) == 2 and lhs is not None and rhs[0] == "expr":
            return ("eq", lhs, rhs[1], label)
        return rhs if label else ("text", s.lower())
    e = _parse_expr(s)
    return ("expr", e, None) if e is not None else ("text", s.lower())


@_cache(16384)
def _value(s: str):
    r"""Normalised answer -> value: an item, a ("list", items) of comma-separated solutions (groups
    separated by ";" are items too), a ("named", names, items) list "m=4, k=9" with distinct names,
    one ("ineq", ...) for "x<-1, x>5" (disjoint pieces: "or"), or a ("union", items) joined by \cup."""
    groups = _split_top(s, ";")
    if len(groups) > 1:
        return ("list", [_value(g) for g in groups])
    unions = _split_top(s, r"\cup")
    if len(unions) > 1:
        return ("union", [_item(u) for u in unions])
    parts = [p for q in _split_top(s, ",") for p in _expand_pm(q)]
    if len(parts) == 1:
        return _item(s)
    items = [_item(p) for p in parts]
    names = [x[2] if x[0] == "expr" else None for x in items]
    if all(names) and len(set(names)) == len(names):
        return ("named", names, items)
    if all(x[0] == "ineq" and x[1] == items[0][1] for x in items):
        pieces = sorted((iv for x in items for iv in x[2]), key=lambda iv: _sort_key(iv[0]))
        if all(_sort_key(a[2]) < _sort_key(b[0]) for a, b in zip(pieces, pieces[1:])):
            return ("ineq", items[0][1], tuple(pieces))
    return ("list", items)


# ----------------------------------------------------------------------------------------------
# 4. Comparison
# ----------------------------------------------------------------------------------------------
_INF = (sp.oo, -sp.oo, sp.zoo, sp.nan)  # x.has(sp.oo) is False for -oo: test all four
_POINTS = [(0.5719, 0.1377), (1.3142, 0.2413), (2.2917, 0.3331)]  # identity-test points: symbol j = base + j*step


def _numeric(x, subs=None):
    """(re, im) as sympy Floats at NUMERIC_DPS digits, or None if not a finite number."""
    if x.has(*_INF):
        return None
    try:
        re_, im_ = x.evalf(NUMERIC_DPS, subs=subs).as_real_imag()
    except (ArithmeticError, ValueError, TypeError):  # e.g. floor(10^1999 pi): precision exhausted
        return None
    if not (re_.is_Number and im_.is_Number) or re_.has(*_INF) or im_.has(*_INF):
        return None
    return re_, im_


def _close(a, b, subs=None) -> bool | None:
    """|a - b| <= 1e-30 max(|a|, |b|) + 1e-100 numerically (None if either side does not evaluate)."""
    va, vb = _numeric(a, subs), _numeric(b, subs)
    if va is None or vb is None:
        return None
    d2 = (va[0] - vb[0]) ** 2 + (va[1] - vb[1]) ** 2
    s2 = max(va[0] ** 2 + va[1] ** 2, vb[0] ** 2 + vb[1] ** 2)
    return bool(d2 <= NUMERIC_RTOL ** 2 * s2 + NUMERIC_ATOL ** 2)


def _expr_equal(a, b) -> bool:
    if a == b:
        return True
    if a.is_Rational and b.is_Rational:  # exact numbers that differ
        return False
    if a.has(*_INF) or b.has(*_INF):
        return False  # infinities only match structurally (-oo == -oo above)
    syms = sorted(a.free_symbols | b.free_symbols, key=str)
    if not syms:
        return bool(_close(a, b))
    # identity test: two formulas agreeing at 3 generic points (to 30 digits) are the same formula.
    # The points are positive, so sqrt(x^2) = x and |x| = x here: variables are taken as positive reals.
    agree = 0
    for base, step in _POINTS:
        c = _close(a, b, {s: sp.Float(base + j * step, NUMERIC_DPS) for j, s in enumerate(syms)})
        if c is False:
            return False
        agree += c is True
    return agree >= 2


def _eq_equal(l1, r1, l2, r2) -> bool:
    """Equations are equal when (l1 - r1) = c (l2 - r2) for a constant c != 0 (same line/plane/curve)."""
    d1, d2 = sp.Add(l1, -r1), sp.Add(l2, -r2)
    if d1 == d2 or d1 == -d2:
        return True
    syms = sorted(d1.free_symbols | d2.free_symbols, key=str)
    if not syms:
        return False
    ratio = None
    for base, step in _POINTS:
        subs = {s: sp.Float(base + j * step, NUMERIC_DPS) for j, s in enumerate(syms)}
        v1, v2 = _numeric(d1, subs), _numeric(d2, subs)
        if v1 is None or v2 is None or (v2[0] == 0 and v2[1] == 0):
            return False
        q = sp.Add(v1[0], sp.I * v1[1]) / sp.Add(v2[0], sp.I * v2[1])
        if ratio is None:
            if q == 0:
                return False
            ratio = q
        elif not _close(q, ratio):
            return False
    return True


def _sort_key(x) -> float:
    v = _numeric(x)
    return float(v[0]) if v is not None else float("inf") if x == sp.oo else float("-inf")


def _region(v):
    """A set of reals as sorted intervals (lo, lo closed, hi, hi closed): from an inequality, an
    interval (a, b] or a union of intervals. None for anything else."""
    if v[0] == "ineq":
        return list(v[2])
    if v[0] == "seq" and v[1] in "([" and v[2] in ")]" and len(v[3]) == 2 and _constant(v):
        return [(v[3][0][1], v[1] == "[", v[3][1][1], v[2] == "]")]
    if v[0] == "union":
        parts = [_region(u) for u in v[1]]
        return None if None in parts else sorted((iv for p in parts for iv in p), key=lambda iv: _sort_key(iv[0]))
    return None


def _same_region(a, b) -> bool:
    def same_end(x, cx, y, cy):  # an infinite end is open whatever the bracket says
        return _expr_equal(x, y) and (cx == cy or x.has(*_INF))
    return len(a) == len(b) and all(same_end(*x[:2], *y[:2]) and same_end(*x[2:], *y[2:]) for x, y in zip(a, b))


def _as_eq(v):
    """An equation (lhs, rhs): "2x - y = 3", or "y = 2x + 3" read as one."""
    return v[1:3] if v[0] == "eq" else (sp.Symbol(v[2]), v[1]) if v[0] == "expr" and v[2] else None


def _equal(g, p) -> bool:
    """Gold value g vs predicted value p (tuples from _value / _item)."""
    kg, kp = g[0], p[0]
    if kg == "expr" and kp == "expr":
        return _expr_equal(g[1], p[1])
    if kg == "ineq" or kp == "ineq":  # the same set of reals: y <= 7, 7 >= y, (-oo, 7]
        if kg == kp and g[1] != p[1]:
            return False
        rg, rp = _region(g), _region(p)
        return rg is not None and rp is not None and _same_region(rg, rp)
    if kg == "eq" or kp == "eq":  # y = 2x + 3 vs 2x - y + 3 = 0
        eg, ep = _as_eq(g), _as_eq(p)
        if eg is not None and ep is not None and _eq_equal(*eg, *ep):
            return True
        lab, other = (g, p) if kg == "eq" else (p, g)  # |CD| = 6 vs 6: the label is optional
        return lab[3] and other[0] != "eq" and _equal(("expr", lab[2], None), other)
    if kg == "named" or kp == "named":  # m = 4, k = 9: names must agree, or the order when one is unnamed
        if kg == kp and sorted(g[1]) == sorted(p[1]):
            return all(_equal(x, p[2][p[1].index(n)]) for n, x in zip(*g[1:]))
        if kg == kp:  # other letters than the gold's: compare in order
            return _all_equal(g[2], p[2])
        other = p if kg == "named" else g
        items = other[1] if other[0] == "list" else other[3] if other[:3] == ("seq", "(", ")") else None
        return items is not None and _all_equal((g if kg == "named" else p)[2], items)
    if kg == "seq" and kp == "seq":  # tuples and intervals: order and bracket types matter
        return g[1:3] == p[1:3] and _all_equal(g[3], p[3])
    if kg == "matrix" and kp == "matrix":
        return len(g[1]) == len(p[1]) and all(_all_equal(a, b) for a, b in zip(g[1], p[1]))
    if {kg, kp} == {"matrix", "seq"}:  # a vector written as (1, 2) instead of a pmatrix column
        m, q = (g, p) if kg == "matrix" else (p, g)
        flat = [c for row in m[1] for c in row]
        vector = len(m[1]) == 1 or all(len(row) == 1 for row in m[1])
        return vector and q[1:3] == ("(", ")") and _all_equal(flat, q[3])
    if kg in ("list", "set") and kp in ("list", "set") or kg == kp == "union":  # solutions: any order
        return _same_multiset(g[1], p[1])
    if {kg, kp} == {"list", "seq"}:  # "1, 2" for the pair "(1, 2)": same order needed
        lst, seq = (g, p) if kg == "list" else (p, g)
        return seq[1:3] == ("(", ")") and _all_equal(lst[1], seq[3])
    if kg == "union" or kp == "union":
        u, other = (g, p) if kg == "union" else (p, g)
        return len(u[1]) == 1 and _equal(u[1][0], other)
    if kg == "text" and kp == "text":
        return g[1] == p[1]
    return False


def _all_equal(xs, ys) -> bool:
    return len(xs) == len(ys) and all(_equal(x, y) for x, y in zip(xs, ys))


def _same_multiset(xs, ys) -> bool:
    """Unordered match: each gold element is used at most once ("1, 2" is not "1, 1")."""
    if len(xs) != len(ys) or len(xs) > 64:
        return False
    left = list(ys)
    for x in xs:
        j = next((j for j, y in enumerate(left) if _equal(x, y)), None)
        if j is None:
            return False
        left.pop(j)
    return True


_PLAIN_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")
_FRAC_RE = re.compile(r"([-+]?)\\frac(?:\{(\d+)\}|(\d))(?:\{(\d+)\}|(\d))|([-+]?\d+)/(\d+)")


def _plain_number(s: str) -> Fraction | None:
    """Fast path: "-12", "0.5", "\\frac{3}{4}", "\\frac34", "3/4" -> exact Fraction; else None."""
    if len(s) > 1000:
        return None
    if _PLAIN_RE.fullmatch(s):
        return Fraction(s)
    m = _FRAC_RE.fullmatch(s)
    if m is None:
        return None
    if m.group(6) is not None:
        num, den = int(m.group(6)), int(m.group(7))
    else:
        num, den = int(m.group(1) + (m.group(2) or m.group(3))), int(m.group(4) or m.group(5))
    return Fraction(num, den) if den else None


@_cache(65536)
def _math_equal(pred: str, gold: str, fast: bool = True) -> tuple[bool, str]:
    """Normalised predicted vs gold MATH answer -> (equal, reason). fast=False skips the string
    shortcut (tests use it to push every gold through the parser)."""
    p, g = _normalize(pred)[0], _normalize(gold)[0]  # the % sign is decoration: 28\% = 28 != 0.28
    if fast and p == g:
        return True, "equal (string)"
    if not p:
        return False, "empty answer"
    if max(len(p), len(g)) > MAX_ANSWER_CHARS:
        return False, "mismatch (too long to parse)"
    fp, fg = _plain_number(p), _plain_number(g)
    if fp is not None and fg is not None:
        return (fp == fg), "equal (number)" if fp == fg else "mismatch"
    mb = re.fullmatch(r"(\w+)_(\d+)", g)  # base-n answer "204_5" given without the base
    if mb and p == mb.group(1):
        return True, "equal (base digits)"
    gv, pv = _value(g), _value(p)
    if _equal(gv, pv):
        return True, "equal (symbolic)"
    if pv[0] == "text" and gv[0] != "text" and _parse_expr(p) is None:
        return False, "mismatch (unparsable answer)"
    return False, "mismatch"


# ---- TheoremQA kinds and multiple choice ---------------------------------------------------------
def _to_number(s: str):
    """A numeric answer (TheoremQA) -> (sympy number, had %), or None. Units after it are ignored."""
    n, pct = _normalize(s)
    f = _plain_number(n)
    if f is not None:
        return sp.Rational(f.numerator, f.denominator), pct
    e = _parse_expr(n)
    if e is None or e.free_symbols:  # "5.2m/s": keep the leading number
        m = re.match(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?:(?:\\times|\\cdot|\*)10\^\{?[-+]?\d+\}?)?", n)
        e = _parse_expr(m.group()) if m and re.match(r"[a-zA-Z\\/]", n[m.end():]) else None
    if e is None or e.free_symbols or not e.is_number or _numeric(e) is None:
        return None
    return e, pct


def _float_ok(p: float, g: float, gold: str) -> bool:
    """TheoremQA floats: within 1% of the gold, or within the gold's own rounding (0.2 covers
    0.2075 = what was rounded to 0.2), the latter capped at 5% so a 1-digit gold is not a wide target."""
    m = re.fullmatch(r"\s*[-+]?\d*\.?(\d*)(?:[eE]([-+]?\d+))?\s*", gold)
    half_ulp = 0.5 * 10.0 ** (-(len(m.group(1)) - int(m.group(2) or 0))) if m and "." in gold else 0.0
    tol = max(FLOAT_RTOL * abs(g), min(half_ulp, 0.05 * abs(g)) if g != 0 else half_ulp)
    return abs(p - g) <= tol


def _number_ok(p, pct: bool, gold: str, mode: str) -> bool:
    """mode: "integer" (exact), "float" (_float_ok) or "auto" (exact if the gold looks like an integer)."""
    gv = _to_number(gold)
    if gv is None:
        return False
    g, (g_re, g_im) = gv[0], _numeric(gv[0])
    exact = mode == "integer" or mode == "auto" and re.fullmatch(r"\s*[-+]?\d+\s*", gold) or g_im != 0
    for c in [p, p / 100] if pct else [p]:  # "25%" may mean 25 or 0.25
        if exact:
            ok = _expr_equal(c, g)
        else:
            c_re, c_im = _numeric(c) or (None, None)
            ok = c_re is not None and c_im == 0 and _float_ok(float(c_re), float(g_re), gold)
        if ok:
            return True
    return False


def _strip_brackets(s: str) -> str:
    s = s.strip()
    for a, b in (("\\{", "\\}"), ("[", "]"), ("(", ")"), ("{", "}")):
        if s.startswith(a) and s.endswith(b) and _closing(s, len(a) - 1) == len(s) - 1:
            return s[len(a):-len(b)]
    return s


_LETTER_FULL = re.compile(r"\(?([A-Ja-j])\)?[.:]?")
_LETTER_HEAD = re.compile(r"\(([A-Ja-j])\)|([A-J])(?![A-Za-z0-9])")


def _letter(s: str | None) -> str | None:
    if s is None:
        return None
    s = _drop_text(s).replace("*", "").replace("$", "").strip()
    if re.search(r"[A-J]\)?\s*(?:,|/|\bor\b|\band\b)\s*\(?[A-J]\b", s):  # "A, B" / "(A) or (B)": no single answer
        return None
    m = _LETTER_FULL.fullmatch(s) or _LETTER_HEAD.match(s)
    return None if m is None else next(g for g in m.groups() if g).upper()


def _extract_choice(text: str) -> str | None:
    """MMLU-Pro style: \\boxed{C}, "the answer is (C)", "Answer: C", or a last line "(C)" / "C."."""
    for cand in ((_last_boxed(text) or (None,))[0], extract_answer(text)):
        letter = _letter(cand)
        if letter:
            return letter
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if lines:
        m = _LETTER_FULL.fullmatch(lines[-1].replace("*", "").strip())
        if m and m.group(1).isupper():
            return m.group(1)
    return None


_TRUE, _FALSE = {"true", "yes", "correct"}, {"false", "no", "incorrect"}


def _to_bool(s: str | None) -> bool | None:
    if s is None:
        return None
    said = {w in _TRUE for w in re.findall(r"[a-z]+", _drop_text(s).lower()) if w in _TRUE | _FALSE}
    return said.pop() if len(said) == 1 else None  # "True or False" says nothing


_KINDS = {"math": "math", "choice": "choice", "mc": "choice", "multiple_choice": "choice",
          "integer": "integer", "int": "integer", "float": "float", "bool": "bool", "boolean": "bool",
          "list": "list", "list of integer": "list of integer", "list of float": "list of float",
          "option": "option"}


def _extract(text: str, kind: str) -> str | None:
    """Stage 1, text work only (linear-time regexes): the candidate answer for this kind."""
    return _extract_choice(text) if kind in ("choice", "option") else extract_answer(text)


def _judge(ans: str | None, gold: str, kind: str) -> Grade:
    """Stage 2: the extracted answer vs the gold answer (this is where sympy runs)."""
    if ans is None:
        return Grade(False, "no answer", None)
    if kind in ("choice", "option"):
        ok = ans == _letter(gold)
    elif kind == "math":
        box = _last_boxed(gold)  # a gold given as \boxed{..} or as a whole reference solution
        gold = box[0] if box is not None else gold
        ok, why = _math_equal(ans, gold)
        return Grade(ok, why, ans)
    elif kind == "bool":
        p = _to_bool(ans)
        ok = p is not None and p == _to_bool(gold)
    elif kind in ("integer", "float"):
        pv = _to_number(ans)
        ok = pv is not None and _number_ok(pv[0], pv[1], gold, kind)
    else:  # lists: same length, element by element, in order
        ps = _split_top(_strip_brackets(_normalize(ans)[0]), ",")
        gs = _split_top(_strip_brackets(gold), ",")
        mode = {"list of integer": "integer", "list of float": "float"}.get(kind, "auto")
        pvs = [_to_number(x) for x in ps] if len(ps) == len(gs) else []
        ok = len(ps) == len(gs) and all(pv is not None and _number_ok(*pv, g.strip(), mode) for pv, g in zip(pvs, gs))
    return Grade(ok, "equal" if ok else "mismatch", ans)


def _kind(text, gold, kind) -> str | Grade:
    """The canonical kind, or the Grade for input that cannot be graded at all."""
    if not isinstance(text, str) or not isinstance(gold, str) or not isinstance(kind, str):
        return Grade(False, "bad input", None)
    k = _KINDS.get(kind.strip().lower())
    if k is None:
        warnings.warn(f"verify: unknown kind {kind!r}; expected one of {sorted(_KINDS)}", stacklevel=3)
        return Grade(False, f"unknown kind {kind!r}", None)
    return k


def _safely(f, *args) -> Grade:
    try:
        return f(*args)
    except Exception as e:  # noqa: BLE001 -- a reward function must not crash training
        return Grade(False, f"error: {type(e).__name__}", None)


def grade(text: str, gold: str, kind: str = "math") -> Grade:
    """Grade one response against a gold answer. Never raises: bad input is simply not correct."""
    k = _kind(text, gold, kind)
    if isinstance(k, Grade):
        return k
    return _safely(lambda: _judge(_extract(text, k), gold, k))


def is_correct(text: str, gold: str, kind: str = "math") -> bool:
    """Does the response's final answer equal the gold answer?"""
    return grade(text, gold, kind).correct


# ----------------------------------------------------------------------------------------------
# 5. Batch: persistent worker subprocesses, a few items queued on each, killed on timeout
# ----------------------------------------------------------------------------------------------
class _Timeout(BaseException):  # BaseException so `except Exception` inside grading cannot swallow it
    pass


def _on_alarm(signum, frame):
    raise _Timeout()


def _judge_in_process(ans, gold, kind, timeout: float) -> Grade:
    """workers=1: judge here, time-limited by SIGALRM when we are the main thread of a Unix process
    (elsewhere only the parser's own size limits apply)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        return _safely(_judge, ans, gold, kind)
    old = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            return _safely(_judge, ans, gold, kind)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        return Grade(False, "timeout", ans)
    finally:
        signal.signal(signal.SIGALRM, old)


def _serve():
    """Worker main loop: one JSON line [answer, gold, kind] in, one [correct, reason, extracted] out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray prints go to stderr, never into the protocol
    try:
        import resource  # a second line of defence against memory blow-ups: 4 GiB address space
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    except (ImportError, ValueError, OSError):
        pass
    slow_gold = os.environ.get("VERIFY_TEST_SLOW_GOLD")  # tests only: this gold sleeps 60 s (the timeout path)
    out.write(b"ready\n")
    for line in sys.stdin.buffer:
        ans, gold, kind = json.loads(line)
        if slow_gold is not None and gold == slow_gold:
            time.sleep(60)
        out.write((json.dumps(list(_safely(_judge, ans, gold, kind))) + "\n").encode())


class _Worker:
    def __init__(self):
        here = os.path.dirname(os.path.abspath(__file__))
        boot = "import sys; sys.path.insert(0, sys.argv[1]); import verify; verify._serve()"
        self.proc = subprocess.Popen([sys.executable, "-c", boot, here], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, bufsize=0)
        self.buf, self.ready, self.t0 = b"", False, time.monotonic()
        self.queue: deque[int] = deque()  # items sent and not answered yet; the first is being judged
        self.inflight = 0  # their bytes: kept under PIPE_BUDGET so a write never blocks

    def kill(self):
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        self.proc.kill()
        self.proc.wait()


class _Pool:
    """Reusable worker processes (started on first use, ~1 s; kept for later grade_batch calls).
    The parent extracts answers (linear-time text work) and ships only (answer, gold, kind)."""
    STARTUP_S = 120.0  # a worker that is not ready by then is considered broken
    PIPELINE = 8  # items queued per worker, to hide the pipe round trip
    PIPE_BUDGET = 32 << 10  # bytes in flight per worker; below the 64 KiB pipe buffer, so writes never block

    def __init__(self, n: int):
        self.n, self.workers = n, [_Worker() for _ in range(n)]
        self.sel = selectors.DefaultSelector()
        for w in self.workers:
            self.sel.register(w.proc.stdout, selectors.EVENT_READ, w)

    def close(self):
        for w in self.workers:
            w.kill()
        self.workers = []
        self.sel.close()

    def _replace(self, w: _Worker, todo: deque, out: list, why: str, answers: list) -> int:
        """Kill w and start a fresh worker; returns how many items got their final grade (0 or 1)."""
        done = 0
        if w.queue:  # the item being judged is lost; the ones queued behind it go back to the queue
            i = w.queue.popleft()
            out[i], done = Grade(False, why, answers[i]), 1
            todo.extendleft(reversed(w.queue))
        self.sel.unregister(w.proc.stdout)
        w.kill()
        fresh = _Worker()
        self.workers[self.workers.index(w)] = fresh
        self.sel.register(fresh.proc.stdout, selectors.EVENT_READ, fresh)
        return done

    def run(self, jobs: list[tuple], timeout: float) -> list[Grade]:
        msgs = [(json.dumps(j) + "\n").encode() for j in jobs]
        out: list[Grade | None] = [None] * len(jobs)
        todo, failures, left = deque(range(len(jobs))), 0, len(jobs)
        answers = [j[0] for j in jobs]
        while left:
            now = time.monotonic()
            for w in list(self.workers):  # hand out work (to live workers: one may have died idle)
                if w.ready and not w.queue and w.proc.poll() is not None:
                    self._replace(w, todo, out, "worker died", answers)
                    continue
                while w.ready and todo and len(w.queue) < self.PIPELINE and (
                        not w.queue or w.inflight + len(msgs[todo[0]]) <= self.PIPE_BUDGET):
                    i = todo.popleft()
                    if not w.queue:
                        w.t0 = now
                    w.queue.append(i)
                    w.inflight += len(msgs[i])
                    try:
                        w.proc.stdin.write(msgs[i])
                    except OSError:
                        break  # died: noticed as EOF below
            waits = [w.t0 + (timeout if w.ready else self.STARTUP_S) - now for w in self.workers
                     if w.queue or not w.ready]
            for key, _ in self.sel.select(max(0.0, min(waits)) if waits else None):
                w = key.data
                data = os.read(w.proc.stdout.fileno(), 1 << 20)
                if not data:  # the worker died (e.g. its memory limit); its current item is not correct
                    failures += not w.ready
                    left -= self._replace(w, todo, out, "worker died", answers)
                    continue
                w.buf += data
                while b"\n" in w.buf:
                    line, w.buf = w.buf.split(b"\n", 1)
                    if line == b"ready":
                        w.ready, w.t0 = True, time.monotonic()
                    elif w.queue:
                        i = w.queue.popleft()
                        out[i], w.t0, left = Grade(*json.loads(line)), time.monotonic(), left - 1
                        w.inflight -= len(msgs[i])
            now = time.monotonic()
            for w in list(self.workers):
                if w.queue and now - w.t0 > timeout:
                    left -= self._replace(w, todo, out, "timeout", answers)
                elif not w.ready and now - w.t0 > self.STARTUP_S:
                    failures += 1
                    left -= self._replace(w, todo, out, "worker died", answers)
            if failures > 2 * self.n:  # workers cannot start here: finish in this process
                for i in [i for i, g in enumerate(out) if g is None]:
                    out[i] = _judge_in_process(*jobs[i], timeout)
                self.close()
                break
        return out


_POOL: _Pool | None = None
_POOL_LOCK = threading.Lock()


def close_pool():
    """Stop grade_batch's worker processes (also done automatically at exit)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.close()
            _POOL = None


atexit.register(close_pool)


def default_workers() -> int:
    """Worker processes per calling process: this process's share of the machine's cores (torchrun's
    LOCAL_WORLD_SIZE processes share them), at most 8, at least 1."""
    local_world = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(8, (os.cpu_count() or 1) // local_world))


def grade_batch(texts: list[str], golds: list[str], kinds: list[str] | str = "math", workers: int = 0,
                timeout: float = DEFAULT_TIMEOUT) -> list[Grade]:
    """Grade many responses; same results as [grade(t, g, k) ...]. workers=0 -> default_workers()
    worker processes, workers=1 -> in this process. The answer is extracted here (linear-time text
    work); judging it gets `timeout` seconds, and an item that overruns is Grade(False, "timeout",
    answer) with its worker killed and replaced. The worker pool starts on first use (~1 s) and is
    reused by later calls with the same `workers`; close_pool() stops it."""
    global _POOL
    kinds = [kinds] * len(texts) if isinstance(kinds, str) else list(kinds)
    if not (len(texts) == len(golds) == len(kinds)):
        raise ValueError(f"grade_batch: texts, golds, kinds have lengths {len(texts)}, {len(golds)}, {len(kinds)}")
    n = workers if workers > 0 else default_workers()
    out: list[Grade | None] = [None] * len(texts)
    jobs, idx = [], []
    for i, (t, g, k) in enumerate(zip(texts, golds, kinds)):
        kk = _kind(t, g, k)
        if isinstance(kk, Grade):
            out[i] = kk  # bad input: answered at once, nothing to ship
            continue
        ans = _safely(_extract, t, kk)
        if isinstance(ans, Grade) or ans is None:
            out[i] = Grade(False, "no answer", None) if ans is None else ans
            continue
        jobs.append((ans, g, kk))
        idx.append(i)
    if n == 1 or not jobs:
        res = [_judge_in_process(a, g, k, timeout) for a, g, k in jobs]
    else:
        with _POOL_LOCK:
            try:
                if _POOL is None or _POOL.n != n or not _POOL.workers:
                    if _POOL is not None:
                        _POOL.close()
                    _POOL = _Pool(n)
                res = _POOL.run(jobs, timeout)
            except OSError as e:  # cannot start processes here (fd or process limits): judge in-process
                warnings.warn(f"verify.grade_batch: worker processes unavailable ({e}); grading in-process")
                _POOL = None
                res = [_judge_in_process(a, g, k, timeout) for a, g, k in jobs]
    for i, r in zip(idx, res):
        out[i] = r
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for f in fields(Args):
        p.add_argument(f"--{f.name}", type=type(f.default), default=f.default)
    a = p.parse_args(argv)
    if a.kind.strip().lower() not in _KINDS:  # refused up front: `error: --kind: got X, expected Y`, exit 2
        import dist
        dist.arg_error("--kind", f"got {a.kind!r}, expected one of {', '.join(sorted(_KINDS))}")
    print(grade(a.text, a.gold, a.kind))


if __name__ == "__main__":
    main()
