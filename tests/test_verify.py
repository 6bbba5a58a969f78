"""Tests for verify.py: a table of hand-checked cases, extraction, safety, pathological input,
the batch form, and the MATH-500 / MATH-train gold answers (skipped if the data is absent)."""
import ast
import builtins
import json
import re
import signal
import time
from pathlib import Path

import pytest

import verify
from verify import Grade, extract_answer, grade, grade_batch, is_correct
from verify_cases import CASES as LABELLED, CASES_BY_CATEGORY, PATHOLOGICAL as PATHOLOGICAL_14

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def B(ans: str) -> str:
    """A typical response ending in a boxed answer."""
    return "Let me work through this carefully.\n...\nTherefore the final answer is $\\boxed{%s}$." % ans


# (response, gold, kind, expected)
CASES = [
    # ---- math: fractions, decimals, exact numbers --------------------------------------------------
    (B(r"\frac12"), "0.5", "math", True),
    (B("0.5"), r"\frac{1}{2}", "math", True),
    (B("1/2"), r"\frac{1}{2}", "math", True),
    (B(r"\dfrac{3}{4}"), r"\frac34", "math", True),
    (B(r"\tfrac{3}{4}"), "0.75", "math", True),
    (B(r"\frac{6}{4}"), r"\frac32", "math", True),
    (B("-.5"), r"-\frac12", "math", True),
    (B(r"\frac{-2}{3}"), r"-\frac{2}{3}", "math", True),
    (B("1.25"), r"\frac54", "math", True),
    (B(r"\frac{1}{4}"), ".25", "math", True),
    (B("3.0"), "3", "math", True),
    (B("3."), "3", "math", True),
    (B(r"1\frac{4}{5}"), r"\frac{9}{5}", "math", True),
    (B(r"137\frac12"), "137.5", "math", True),
    (B("1267650600228229401496703205374"), r"2^{100} - 2", "math", True),
    (B(r"0.\overline{6}"), r"\frac23", "math", True),
    (B(r"0.1\overline{6}"), r"\frac16", "math", True),
    (B(r"\frac13 \approx 0.333"), r"\frac13", "math", True),
    (B(r"0.\overline{3}"), "0.3", "math", False),
    (B(r"0.333 \approx \frac13"), r"\frac13", "math", False),
    (B("1/2"), "2", "math", False),
    (B("2"), r"\frac{1}{2}", "math", False),
    (B("0.50001"), "0.5", "math", False),
    (B("0.5"), "0.50001", "math", False),
    (B("0.333"), r"\frac13", "math", False),
    (B("0.3333333333"), r"\frac13", "math", False),
    (B(r"\frac{4}{9}"), r"\frac{4}{7}", "math", False),
    (B("0.4444"), r"\frac49", "math", False),
    (B("12.5"), "12.50001", "math", False),
    (B(r"1\frac{4}{5}"), r"\frac45", "math", False),
    (B("10^{100}"), "10^{100}+1", "math", False),
    (B("2^{4181}"), "2^{4180}", "math", False),
    (B("-3"), "3", "math", False),
    (B("9"), "6", "math", False),
    # ---- math: MATH formatting conventions --------------------------------------------------------
    (B(r"10,\!080"), "10080", "math", True),
    (B("10080"), r"10,\!080", "math", True),
    (B("1,000"), "1000", "math", True),
    (B("11,111,111,100"), r"11,\! 111,\! 111,\! 100", "math", True),
    (B("58500"), "58,500", "math", True),
    (B(r"\frac{1}{20000}"), r"\frac{1}{20,\!000}", "math", True),
    (B(r"5\text{ cm}"), "5", "math", True),
    (B("5 cm"), "5", "math", True),
    (B(r"15\mbox{ cm}^2"), "15", "math", True),
    (B("5.4"), r"5.4 \text{ cents}", "math", True),
    (B(r"30^\circ"), "30", "math", True),
    (B(r"30^{\circ}"), "30", "math", True),
    (B("30"), r"30^\circ", "math", True),
    (B(r"\frac{270}{7}^\circ"), r"\frac{270}7\text{ degrees}", "math", True),
    (B(r"50\%"), "50", "math", True),
    (B("10%"), r"10\%", "math", True),
    (B("0.1"), r"10\%", "math", False),  # issue 14, convention 6: the scale is not optional
    (B(r"\$18.90"), "18.90", "math", True),
    (B("18.9"), r"\$18.90", "math", True),
    (B(r"\$32,\!348"), "32348", "math", True),
    (B("x = 3"), "3", "math", True),
    (B("3"), "x=3", "math", True),
    (B("k = 6"), "6", "math", True),
    (B("-2x"), "y = -2x", "math", True),
    (B(r"\text{(C)}"), "C", "math", True),
    (B("C"), r"\text{(C)}", "math", True),
    (B("(C)"), r"\text{(C)}", "math", True),
    (B(r"\textbf{(C)}"), r"\text{(C)}", "math", True),
    (B("204"), "204_5", "math", True),
    (B("204_{5}"), "204_5", "math", True),
    (B("4210_5"), "4210_{5}", "math", True),
    (B(r"\left( 3, \frac{\pi}{2} \right)"), r"(3,\pi/2)", "math", True),
    (B(r"x \in [-2,7]"), "[-2, 7]", "math", True),
    (B(r"5\text{ cm}"), "6", "math", False),
    (B(r"31^\circ"), "30", "math", False),
    (B(r"51\%"), "50", "math", False),
    (B("0.51"), r"50\%", "math", False),
    (B("5000"), r"50\%", "math", False),
    (B(r"0.5\%"), "50", "math", False),
    (B(r"\$18.91"), "18.90", "math", False),
    (B("1,001"), "1000", "math", False),
    (B("1000"), "1,001", "math", False),
    (B("x=3"), "x=-3", "math", False),
    (B("D"), r"\text{(C)}", "math", False),
    (B("205"), "204_5", "math", False),
    (B("204_6"), "204_5", "math", False),
    (B(r"90^\circ"), "91", "math", False),
    # ---- math: symbolic equality --------------------------------------------------------------------
    (B(r"\frac{\sqrt{3}}{3}"), r"\frac{1}{\sqrt{3}}", "math", True),
    (B(r"\pi \cdot 2"), r"2\pi", "math", True),
    (B(r"\sqrt2"), r"\sqrt{2}", "math", True),
    (B(r"\sqrt{8}"), r"2\sqrt{2}", "math", True),
    (B(r"\sqrt{13}\cdot 3"), r"3\sqrt{13}", "math", True),
    (B(r"\frac{\sqrt{6}}{2}"), r"\sqrt{\frac{3}{2}}", "math", True),
    (B(r"\frac{2}{\sqrt5-1}"), r"\frac{1+\sqrt5}{2}", "math", True),
    (B(r"\frac{1+\sqrt5}{2} - \frac{2}{\sqrt5-1}"), "0", "math", True),
    (B(r"\sqrt{3+2\sqrt2}"), r"1+\sqrt2", "math", True),
    (B("(x+1)^2"), "x^2+2x+1", "math", True),
    (B("b^2+a^2"), "a^2 + b^2", "math", True),
    (B("(a+5)(b+2)"), "ab+2a+5b+10", "math", True),
    (B(r"\frac{9a+11}{20}"), r"\frac{11+9a}{20}", "math", True),
    (B("2(k+1)"), "2k+2", "math", True),
    (B("p-q"), "p - q", "math", True),
    (B(r"\frac{1}{2}x^2"), r"\frac{x^2}{2}", "math", True),
    (B("x^2/2"), r"\frac{x^2}{2}", "math", True),
    (B(r"\sin^2 x + \cos^2 x"), "1", "math", True),
    (B(r"\frac{\cos x}{\sin x}"), r"\cot x", "math", True),
    (B(r"\log_2 8"), "3", "math", True),
    (B(r"\log_{10}1000"), "3", "math", True),
    (B("sqrt(2)/2"), r"\frac{\sqrt2}{2}", "math", True),
    (B(r"e^{i\pi}"), "-1", "math", True),
    (B(r"\binom{5}{2}"), "10", "math", True),
    (B("5!"), "120", "math", True),
    (B("|-3|"), "3", "math", True),
    (B("7i - 2"), "-2 + 7i", "math", True),
    (B("6-5i"), "6 - 5i", "math", True),
    (B(r"\infty"), r"\infty", "math", True),
    (B(r"\frac{\sqrt{3}}{2}"), r"\frac{\sqrt{2}}{2}", "math", False),
    (B(r"\sqrt{3}"), "3", "math", False),
    (B("3.14"), r"\pi", "math", False),
    (B("3.14159265358979"), r"\pi", "math", False),
    (B(r"\sqrt{2}"), "1.41421356237", "math", False),
    (B("x^2+2x+1"), "(x-1)^2", "math", False),
    (B("x^2"), "y^2", "math", False),
    (B("2x"), "2y", "math", False),
    (B("2k+1"), "2k+2", "math", False),
    (B("p+q"), "p - q", "math", False),
    (B("q - p"), "p - q", "math", False),
    (B("(a+5)(b+3)"), "(a+5)(b+2)", "math", False),
    (B(r"\sin x"), r"\cos x", "math", False),
    (B(r"\cot x"), r"\tan x", "math", False),
    (B(r"\frac{\pi}{3}"), r"\frac{\pi}{6}", "math", False),
    (B(r"5\sqrt{2}"), r"6\sqrt{2}", "math", False),
    (B("-13x+3"), "-13x-3", "math", False),
    (B("5r^5"), "5r^4", "math", False),
    (B("x^8 + x^7 + x^6"), "x^8 + x^7 + x^5", "math", False),
    (B("i"), "-i", "math", False),
    (B("-2 + 7i"), "-2 - 7i", "math", False),
    (B("7 - 2i"), "-2 + 7i", "math", False),
    (B(r"\infty"), r"-\infty", "math", False),
    (B(r"\infty"), "1000000", "math", False),
    (B("3!"), "5", "math", False),
    (B(r"\binom{5}{2}"), "20", "math", False),
    (B(r"\log_2 8"), "2", "math", False),
    (B(r"\frac{1}{0}"), "1", "math", False),
    # ---- math: scientific notation ------------------------------------------------------------------
    (B(r"1.5 \times 10^{3}"), "1500", "math", True),
    (B("1.5e3"), "1500", "math", True),
    (B(r"6.72 \times 10^{-5}"), ".0000672", "math", True),
    (B("1.5e3"), "150", "math", False),
    (B(r"1.5 \times 10^{4}"), "1500", "math", False),
    # ---- math: intervals, unions, tuples, lists, sets, matrices --------------------------------------
    (B(r"(-\infty,2)\cup(3,\infty)"), r"(-\infty, 2) \cup (3, \infty)", "math", True),
    (B(r"(3, \infty) \cup (-\infty, 2)"), r"(-\infty, 2) \cup (3, \infty)", "math", True),
    (B(r"(0.6,\frac83]"), r"\left(\frac{3}{5},\frac{8}{3}\right]", "math", True),
    (B(r"[\pi^2/8, 5\pi^2/4]"), r"\left[ \frac{\pi^2}{8}, \frac{5 \pi^2}{4} \right]", "math", True),
    (B(r"(2,\infty)"), r"(2, \infty)", "math", True),
    (B("(1,2)"), "(1, 2)", "math", True),
    (B("(5, -5, -6)"), "(5,-5,-6)", "math", True),
    (B("x = 1, 2"), "2, 1", "math", True),
    (B("1, 2"), "2,1", "math", True),
    (B(r"x=-2 \text{ or } x=1"), "-2,1", "math", True),
    (B(r"\{1, 2\}"), "2, 1", "math", True),
    (B(r"1+\sqrt{19}, 1-\sqrt{19}"), r"1 \pm \sqrt{19}", "math", True),
    (B(r"\{-2, 1+\sqrt5, 1-\sqrt5\}"), r"\{1\pm\sqrt{5},-2\}", "math", True),
    (B(r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"), r"\begin{pmatrix}1\\2\end{pmatrix}", "math", True),
    (B(r"\begin{pmatrix} 0.5 & 0 \\ 0 & 1 \end{pmatrix}"), r"\begin{pmatrix} \frac12 & 0 \\ 0 & 1 \end{pmatrix}",
     "math", True),
    (B("(1,2)"), r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", "math", True),
    (B("y = 2x + 3"), "2x+3", "math", True),
    (B("2x - y + 3 = 0"), "y = 2x + 3", "math", True),
    (B("-5x + 7y - 11z - 4 = 0"), "5x - 7y + 11z + 4 = 0", "math", True),
    (B("[1,2)"), "[1,2]", "math", False),
    (B("(1,2]"), "[1,2]", "math", False),
    (B("(1,2)"), "(2,1)", "math", False),
    (B("(8,-2)"), "(-2,8)", "math", False),
    (B(r"\left( \frac{3}{2}, -13 \right)"), r"\left( \frac{3}{2}, 13 \right)", "math", False),
    (B("(15, -29)"), "(15,-28)", "math", False),
    (B(r"x \in [-2,7)"), r"x \in [-2,7]", "math", False),
    (B(r"(-\infty, 2) \cup (3, \infty)"), r"(-\infty, 2] \cup (3, \infty)", "math", False),
    (B(r"(-\infty, 2)"), r"(-\infty, 2) \cup (3, \infty)", "math", False),
    (B("1, 2"), "1, 2, 3", "math", False),
    (B("1, 2, 2"), "1, 2", "math", False),
    (B("1"), "1, 2", "math", False),
    (B("3, 5, 7"), "3, 5", "math", False),
    (B("x = 1, 3"), "1, 2", "math", False),
    (B(r"1 + \sqrt{19}"), r"1 \pm \sqrt{19}", "math", False),
    (B(r"\{1, 2\}"), "(1, 2)", "math", False),
    (B(r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"), r"\begin{pmatrix} 2 \\ 1 \end{pmatrix}", "math", False),
    (B(r"\begin{pmatrix} 1 & 2 \end{pmatrix}"), r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", "math", False),
    (B(r"\begin{pmatrix} 1 & 0 \\ 0 & 1 \end{pmatrix}"), r"\begin{pmatrix} 1 & 0 \\ 0 & -1 \end{pmatrix}",
     "math", False),
    (B("y = 2x + 4"), "y = 2x + 3", "math", False),
    (B("2x - y - 3 = 0"), "y = 2x + 3", "math", False),
    (B("5x - 7y + 11z + 5 = 0"), "5x - 7y + 11z + 4 = 0", "math", False),
    # ---- math: text answers -------------------------------------------------------------------------
    (B("Evelyn"), r"\text{Evelyn}", "math", True),
    (B("evelyn"), r"\text{Evelyn}", "math", True),
    (B(r"\text{east}"), r"\text{east}", "math", True),
    (B(r"\text{Evelyn}"), r"\text{Navin}", "math", False),
    (B("east"), r"\text{west}", "math", False),
    (B("even"), r"\text{odd}", "math", False),
    (B("neve"), r"\text{even}", "math", False),  # words are text, not products of letters
    # ---- math: near misses that must not match --------------------------------------------------------
    (B("x = 2"), "x=3", "math", False),
    (B("y = 3"), "x = 4", "math", False),
    (B(r"\frac{3}{2}"), r"\frac{2}{3}", "math", False),
    (B(r"\frac{1}{2}"), r"\frac{1}{3}", "math", False),
    (B("0.125"), r"\frac{1}{9}", "math", False),
    (B("-0.5"), "0.5", "math", False),
    (B("1000"), "100", "math", False),
    (B("10000"), "1,000", "math", False),
    (B("1,000,000"), "100000", "math", False),
    (B(r"2\pi"), r"\pi", "math", False),
    (B(r"\pi^2"), r"2\pi", "math", False),
    (B(r"\sqrt{3}"), r"\sqrt[3]{3}", "math", False),
    (B(r"\sqrt{2}+\sqrt{3}"), r"\sqrt{5}", "math", False),
    (B(r"\frac{\sqrt{2}}{2}"), r"\frac{1}{2}", "math", False),
    (B("2^{10}"), "1000", "math", False),
    (B("x^2-1"), "(x-1)^2", "math", False),
    (B("x^2+1"), "(x+1)^2", "math", False),
    (B("2x+3"), "3x+2", "math", False),
    (B("x+y"), "xy", "math", False),
    (B("a-b"), "b-a", "math", False),
    (B(r"\frac{x}{2}"), "2x", "math", False),
    (B(r"\sin 2x"), r"2\sin x", "math", False),
    (B(r"\ln 2"), r"\ln 3", "math", False),
    (B(r"e^2"), r"2e", "math", False),
    (B("1+i"), "1-i", "math", False),
    (B("(2,3)"), "(2,3,4)", "math", False),
    (B("(1,2)"), "[1,2]", "math", False),
    (B(r"[0,\infty)"), r"(0,\infty)", "math", False),
    (B(r"(0,1)\cup(2,3)"), r"(0,1)\cup(2,4)", "math", False),
    (B("1, 2, 3"), "1, 2, 4", "math", False),
    (B("-1, 1"), "1", "math", False),
    (B(r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"), r"\begin{pmatrix} 1 \\ 2 \\ 3 \end{pmatrix}", "math", False),
    (B(r"\text{(B)}"), r"\text{(C)}", "math", False),
    (B("Navin"), r"\text{Evelyn}", "math", False),
    (B("13"), "12_5", "math", False),
    (B("15 cm"), r"16\text{ cm}", "math", False),
    (B(r"30\%"), "0.03", "math", False),
    (B(r"\$5"), r"\$50", "math", False),
    # ---- math: no / empty answer --------------------------------------------------------------------
    (B(""), "5", "math", False),
    ("I am not sure about this one.", "5", "math", False),
    ("The answer is 42.", "42", "math", True),
    ("The final answer is $\\frac{1}{2}$.", "0.5", "math", True),
    ("Thus $x = 5$.", "5", "math", True),
    ("Thus $x = 6$.", "5", "math", False),
    # ---- choice (MMLU-Pro) ----------------------------------------------------------------------------
    ("Let's think step by step. The answer is (C).", "C", "choice", True),
    ("The answer is C", "C", "choice", True),
    (B("C"), "C", "choice", True),
    (B(r"\text{(C)}"), "C", "choice", True),
    ("Answer: D", "D", "choice", True),
    ("So we pick\n(C)", "C", "choice", True),
    ("So we pick\nC.", "C", "choice", True),
    ("the answer is (c)", "C", "choice", True),
    ("The answer is (J).", "J", "choice", True),
    ("Therefore, the answer is (B)", "C", "choice", False),
    (B("A"), "B", "choice", False),
    ("It could be (A) or (B), hard to say.", "A", "choice", False),
    ("The answer is a function of the temperature.", "A", "choice", False),
    (B("A, B, C, D"), "A", "choice", False),
    ("The answer is (A) or (B).", "A", "choice", False),
    # ---- TheoremQA: integer -------------------------------------------------------------------------
    ("The answer is 11760.", "11760", "integer", True),
    (B("11,760"), "11760", "integer", True),
    (B("11760.0"), "11760", "integer", True),
    (B("2^{3}"), "8", "integer", True),
    (B("11761"), "11760", "integer", False),
    (B("11760.4"), "11760", "integer", False),
    ("no answer here", "8", "integer", False),
    # ---- TheoremQA: float (1% relative, or the gold's own rounding, capped at 5%) ---------------------
    (B("1.4242"), "1.42", "float", True),
    (B("1.43"), "1.42", "float", True),
    (B(r"4 \times 10^{-5}"), "4e-05", "float", True),
    (B("0.00004"), "4e-05", "float", True),
    (B("25%"), "0.25", "float", True),
    (B(r"25\%"), "25.0", "float", True),
    (B("0.2075"), "0.2", "float", True),
    (B(r"\frac{1}{3}"), "0.333", "float", True),
    (B("3.0 m/s"), "3.0", "float", True),
    (B(r"3.0\text{ m/s}"), "3.0", "float", True),
    (B("0"), "0.0", "float", True),
    (B("1.5"), "1.42", "float", False),
    (B("1.44"), "1.42", "float", False),
    (B("4.1e-5"), "4e-05", "float", False),
    (B("0.22"), "0.2", "float", False),
    (B("-1.42"), "1.42", "float", False),
    (B("0.1"), "0.0", "float", False),
    (B("x + 1"), "1.0", "float", False),
    # ---- TheoremQA: bool ----------------------------------------------------------------------------
    ("The answer is True.", "True", "bool", True),
    (B("yes"), "True", "bool", True),
    (B(r"\text{False}"), "False", "bool", True),
    ("The answer is no", "False", "bool", True),
    (B("False"), "True", "bool", False),
    ("The answer is maybe", "True", "bool", False),
    (B("True or False"), "True", "bool", False),
    # ---- TheoremQA: lists ---------------------------------------------------------------------------
    (B("[0, 5]"), "[0, 5]", "list of integer", True),
    (B("(0, 5)"), "[0, 5]", "list of integer", True),
    (B("0, 5"), "[0, 5]", "list of integer", True),
    (B("[5, 0]"), "[0, 5]", "list of integer", False),
    (B("[0, 5, 1]"), "[0, 5]", "list of integer", False),
    (B("[0.3333, 0.25]"), "[0.333, 0.25]", "list of float", True),
    (B(r"[\frac13, \frac14]"), "[0.333, 0.25]", "list of float", True),
    (B("[0.4, 0.25]"), "[0.333, 0.25]", "list of float", False),
    (B("[1, 0.5]"), "[1, 0.5]", "list", True),
    (B("[1.004, 0.5]"), "[1, 0.5]", "list", False),
    # ---- TheoremQA: option --------------------------------------------------------------------------
    ("The answer is (c)", "(c)", "option", True),
    (B("(c)"), "(c)", "option", True),
    (B("C"), "(c)", "option", True),
    (B("(d)"), "(c)", "option", False),
    ("The answer is (a)", "(c)", "option", False),
]


def test_case_table_is_big_and_balanced():
    assert len(CASES) >= 150
    assert sum(not c[3] for c in CASES) >= len(CASES) / 2


@pytest.mark.parametrize("text,gold,kind,expected", CASES)
def test_cases(text, gold, kind, expected):
    g = grade(text, gold, kind)
    assert isinstance(g, Grade)
    assert g.correct is expected, g
    assert is_correct(text, gold, kind) is expected


def test_labelled_cases_cover_every_category_both_ways():
    """issue 14: >= 200 cases, about half wrong forms, each category with right and wrong forms."""
    assert len(LABELLED) >= 200
    assert 0.4 <= sum(not c[2] for c in LABELLED) / len(LABELLED) <= 0.6
    for cat, rows in CASES_BY_CATEGORY.items():
        assert {e for _, _, e in rows} == {True, False} or cat == "no answer", cat


@pytest.mark.parametrize("text,gold,expected,category", LABELLED)
def test_labelled_cases(text, gold, expected, category):
    g = grade(text, gold)
    assert g.correct is expected, (category, g)


def test_unordered_lists_use_each_gold_element_once():
    for ans, gold in [("1, 2", "1, 1"), ("1, 1", "1, 2"), ("2, 2, 1", "1, 2, 1"), (r"\{1, 2\}", r"\{1, 1\}"),
                      ("(1,2),(1,2)", "(1,2),(2,1)")]:
        assert not is_correct(B(ans), gold) and not is_correct(B(gold), ans), (ans, gold)
    assert is_correct(B("1, 2, 1"), "1, 1, 2")


@pytest.mark.parametrize("kind", ["float", "integer", "bool", "list of integer", "list of float", "option"])
def test_theoremqa_kind_names_are_accepted(kind):
    assert grade(B("x"), "1", kind).reason != f"unknown kind {kind!r}"


def test_bad_input_is_not_correct_and_never_raises():
    for text, gold, kind in [(None, "1", "math"), (B("1"), None, "math"), (5, "5", "math"), (B("1"), "1", None),
                             (b"\\boxed{1}", "1", "math"), (B("1"), "1", 3)]:
        g = grade(text, gold, kind)
        assert g.correct is False and g.reason == "bad input"
    with pytest.warns(UserWarning):
        assert grade(B("1"), "1", "nonsense").correct is False
    for junk in ["\x00\x01", "\\boxed{\\frac{", "}}}}{{{{", "\\boxed{" + "\ud800" + "}", "$" * 7, "\\"]:
        assert grade(junk, "1").correct is False
        assert grade(B("1"), junk).correct is False


# ---- extraction ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    (r"so $\boxed{\frac{1}{2}}$", r"\frac{1}{2}"),
    (r"\boxed{\left\{ 1, \{2\} \right\}}", r"\left\{ 1, \{2\} \right\}"),
    (r"first \boxed{1} then \boxed{2}", "2"),
    (r"\fbox{7}", "7"),
    (r"\boxed 5$.", "5"),
    (r"\boxed{3} and a truncated \boxed{4", "3"),
    ("The answer is 42.\nMore words.", "42"),
    ("blah. The answer is $x = 3$. Done", "x = 3"),
    ("the answer is: **12**.", "12"),
    ("Answer: (B)", "(B)"),
    ("the answer is 1. But wait, the answer is 2.", "2"),
    (r"We get $a = 1$ and finally $\frac{3}{4}$.", r"\frac{3}{4}"),
    (r"costs \$5 and then $y=7$, done.", "y=7"),
    ("display math \\[ x^2 \\] end.", "x^2"),
    ("we get $y=7$ and then we need to", None),  # cut off: a $...$ that does not end the text is no answer
    (r"first \boxed{1}, \boxed{2} joined", "1, 2"),
    (r"$\boxed{1}$ and $\boxed{-1}$", "1, -1"),
    (r"\boxed{1} so \boxed{2}", "2"),
    (r"\boxed{1}. The final answer is 2.", "2"),
    (r"\boxed{5}. I hope the answer is correct.", "5"),
    ("<think>\\boxed{1}</think> The answer is 2", "2"),
    ("<think>\\boxed{1}</think>", "1"),
    ("no answer at all", None),
    ("", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_non_string():
    assert extract_answer(None) is None


# ---- safety ---------------------------------------------------------------------------------------------
INJECTIONS = [
    "__import__('os').system('touch {f}')",
    r"\text{__import__('os').system('touch {f}')}",
    "eval(\"__import__('os').system('touch {f}')\")",
    "exec('import os; os.system(\"touch {f}\")')",
    "open('{f}', 'w').write('x')",
    "(lambda: __import__('subprocess').call(['touch', '{f}']))()",
    "Symbol('x').__class__.__init__.__globals__['os'].system('touch {f}')",
]


@pytest.mark.parametrize("template", INJECTIONS)
def test_model_text_is_never_executed(tmp_path, monkeypatch, template):
    target = tmp_path / "PWNED"
    payload = template.replace("{f}", str(target))
    calls = []

    def spy(name, real):
        def f(src, *a, **k):
            calls.append((name, src))
            return real(src, *a, **k)
        return f
    monkeypatch.setattr(builtins, "eval", spy("eval", builtins.eval))
    monkeypatch.setattr(builtins, "exec", spy("exec", builtins.exec))
    for kind in ["math", "float", "integer", "list", "bool", "choice", "option"]:
        for text in [B(payload), "The answer is " + payload, "$" + payload + "$"]:
            assert grade(text, "0", kind).correct is False
    assert grade_batch([B(payload)], ["0"], workers=1) == [grade(B(payload), "0")]
    assert not target.exists()
    assert not [c for c in calls if payload in str(c[1]) or "import" in str(c[1])]


def test_source_has_no_eval_or_string_parsers():
    """Static check: verify.py never calls eval/exec/sympify/parse_expr/parse_latex/S(...)."""
    tree = ast.parse(Path(verify.__file__).read_text())
    banned = {"eval", "exec", "sympify", "parse_expr", "parse_latex", "S", "lambdify", "__import__", "simplify"}
    calls = [node.func for node in ast.walk(tree) if isinstance(node, ast.Call)]
    names = {f.id for f in calls if isinstance(f, ast.Name)}
    attrs = {f.attr for f in calls if isinstance(f, ast.Attribute)}
    assert not banned & (names | attrs)
    assert "compile" not in names  # the builtin (re.compile is fine)
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in imported if "parsing" in m]  # sympy.parsing.* is never imported


# ---- pathological input: returns, and is graded False ----------------------------------------------------
PATHOLOGICAL = [
    B(r"9^{9^{9^{9}}}"), B("1000000!"), B(r"10^{10^{10}}"), B("2^{2^{2^{2^{2^{2}}}}}"), B("(10^{19999})!"),
    B("9^9^9^9^9"), B("1.5e999999999"), B(r"\sin(10^{19999})"), B(r"(1+\sqrt{2})^{100000}"),
    B(r"\binom{10^{9}}{5 \cdot 10^{8}}"), B(r"x^{10^{100}}"), B(r"\sqrt[10^{100}]{2}"), B("999999999999999!"),
    B(r"10^{19999}\cdot 10^{19999}\cdot 10^{19999}" * 20), B(r"\sqrt{" * 3000 + "2" + "}" * 3000),
    B("{" * 50000 + "1" + "}" * 50000), B("(" * 5000 + "1" + ")" * 5000), B("-" * 100000 + "1"),
    "x" * 1_000_000, B("7" * 1_000_000), "\\boxed{" * 100_000, "$x$ " * 200_000, "\\[" * 100_000,
    "The answer is " + "a" * 1_000_000, B(", ".join(f"x^{k} + {k}" for k in range(60))),
] + PATHOLOGICAL_14


def _alarm(seconds):
    def boom(*_):
        raise TimeoutError("is_correct did not return")
    signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)


@pytest.mark.parametrize("i", range(len(PATHOLOGICAL)))
def test_pathological_input_returns_false(i):
    _alarm(30)  # a generous safety net so a regression fails instead of hanging CI; not a speed goal
    try:
        assert is_correct(PATHOLOGICAL[i], "3") is False
        assert is_correct(PATHOLOGICAL[i], "3", "float") is False
    finally:
        signal.alarm(0)


# ---- grade_batch ----------------------------------------------------------------------------------------
def test_grade_batch_equals_per_item_grades():
    sample = CASES[::3]
    texts, golds, kinds = zip(*[(t, g, k) for t, g, k, _ in sample])
    expected = [grade(t, g, k) for t, g, k in zip(texts, golds, kinds)]
    assert grade_batch(list(texts), list(golds), list(kinds), workers=2) == expected
    assert grade_batch(list(texts), list(golds), list(kinds), workers=1) == expected
    assert [g.correct for g in expected] == [c[3] for c in sample]
    bad = grade_batch([B("1"), None], ["1", "1"], "math", workers=2)
    assert bad == [grade(B("1"), "1"), Grade(False, "bad input", None)]
    with pytest.raises(ValueError):
        grade_batch([B("1")], ["1", "2"])


def test_grade_batch_timeout_kills_only_the_slow_item(monkeypatch):
    texts = [B(str(i)) for i in range(12)]
    golds = [str(i) for i in range(12)]
    kinds = ["math"] * 12
    golds[4] = "slow gold"
    monkeypatch.setenv("VERIFY_TEST_SLOW_GOLD", "slow gold")  # fresh workers read it: this item sleeps 60 s
    verify.close_pool()
    t0 = time.monotonic()
    res = grade_batch(texts, golds, kinds, workers=2, timeout=3.0)
    assert time.monotonic() - t0 < 50  # it did not wait for the sleeper
    assert res[4] == Grade(False, "timeout", "4")
    assert all(r.correct for j, r in enumerate(res) if j != 4)
    pool = verify._POOL
    pids = {w.proc.pid for w in pool.workers}
    assert len(pids) == 2 and all(w.proc.poll() is None for w in pool.workers)  # replaced, alive
    assert all(r.correct for r in grade_batch(texts[:4], golds[:4], workers=2))
    assert verify._POOL is pool and {w.proc.pid for w in pool.workers} == pids  # the pool is reused


def test_grade_batch_survives_a_dead_worker():
    grade_batch([B("1")], ["1"], workers=2)
    verify._POOL.workers[0].proc.kill()  # e.g. killed by the OOM killer between calls
    verify._POOL.workers[0].proc.wait()
    texts, golds = [B(str(i)) for i in range(20)], [str(i) for i in range(20)]
    assert all(g.correct for g in grade_batch(texts, golds, workers=2))
    assert all(w.proc.poll() is None for w in verify._POOL.workers)


def test_grade_batch_in_process_timeout(monkeypatch):
    def slow(ans, gold, kind):
        while True:
            pass
    monkeypatch.setattr(verify, "_judge", slow)
    assert grade_batch([B("1")], ["1"], workers=1, timeout=0.5) == [Grade(False, "timeout", "1")]


# ---- real gold answers ----------------------------------------------------------------------------------------
# Perturbing the last digit of these lands in a unit ("cm}^2" -> "cm}^3"), which the grader ignores by design.
PERTURB_EXCLUDED = {"test/geometry/473.json", "test/prealgebra/1114.json"}


def _rows(name):
    path = DATA / name
    if not path.exists():
        pytest.skip(f"../shared/data not found: {path}")
    return [json.loads(line) for line in path.read_text().splitlines()]


def _perturb(gold):
    digits = [m.start() for m in re.finditer(r"\d", gold)]
    if not digits:
        return None
    i = digits[-1]
    return gold[:i] + str((int(gold[i]) + 1) % 10) + gold[i + 1:]


def test_math500_golds_verify_and_perturbed_do_not():
    rows = _rows("math500.jsonl")
    assert len(rows) == 500
    self_ok = [r["id"] for r in rows if is_correct(B(r["answer"]), r["answer"])]
    parsed_ok = [r["id"] for r in rows if verify._math_equal(r["answer"], r["answer"], fast=False)[0]]
    perturbed = [(r["id"], _perturb(r["answer"])) for r in rows if _perturb(r["answer"]) is not None]
    wrongly_ok = {i for (i, p), r in zip(perturbed, [r for r in rows if _perturb(r["answer"])])
                  if is_correct(B(p), r["answer"])}
    print(f"\nMATH-500: {len(self_ok)}/500 self-verify, {len(parsed_ok)}/500 via the parser, "
          f"{len(perturbed) - len(wrongly_ok)}/{len(perturbed)} perturbed rejected")
    assert len(self_ok) == 500 and len(parsed_ok) == 500
    assert wrongly_ok == PERTURB_EXCLUDED


def test_math_train_golds_self_verify():
    rows = _rows("math_train.jsonl")
    bad = [r["id"] for r in rows if not is_correct(B(r["answer"]), r["answer"])]
    bad_parsed = [r["id"] for r in rows if not verify._math_equal(r["answer"], r["answer"], fast=False)[0]]
    print(f"\nMATH train: {len(rows) - len(bad)}/{len(rows)} self-verify, "
          f"{len(rows) - len(bad_parsed)}/{len(rows)} via the parser")
    assert bad == [] and bad_parsed == []


def test_mmlu_pro_and_theoremqa_golds_self_verify():
    for row in _rows("mmlu_pro_1k.jsonl"):
        assert is_correct(f"The answer is ({row['answer']}).", row["answer"], "choice")
        wrong = "ABCDEFGHIJ"[(row["answer_index"] + 1) % 10]
        assert not is_correct(f"The answer is ({wrong}).", row["answer"], "choice")
    for row in _rows("theoremqa.jsonl"):
        assert is_correct(B(row["answer"]), row["answer"], row["answer_type"]), row


def test_default_workers_share_the_cores_among_local_ranks(monkeypatch):
    monkeypatch.setattr(verify.os, "cpu_count", lambda: 64)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert verify.default_workers() == 8  # one process: at most 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert verify.default_workers() == 8  # 64 cores / 8 ranks
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert verify.default_workers() == 4
    monkeypatch.setattr(verify.os, "cpu_count", lambda: 2)
    assert verify.default_workers() == 1  # never 0
