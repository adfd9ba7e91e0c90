"""Small generated question sets for synthetic benchmarks (the semantic overlap level of the demo).

Each benchmark gets 20–60 template questions whose content words come from its category's topic
vocabulary plus the words of its own name, so an embedding model sees higher similarity within a
category than across categories — the planted structure the semantic overlap should recover.
The questions are not meant to be answerable; they only carry topic vocabulary.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bsig_array.io.questions import question_path, write_question_file
from bsig_array.runtime.defaults import DEFAULTS

# Topic words per category (the paper's eight broad categories, plus a fallback).
VOCABULARY: dict[str, tuple[str, ...]] = {
    "Business": (
        "revenue", "marketing campaign", "balance sheet", "corporate ethics", "supply chain", "shareholders",
        "accounting standard", "brand strategy", "management team", "profit margin", "customer segment",
        "depreciation", "audit", "stakeholder", "pricing strategy",
    ),
    "Humanities": (
        "the treaty", "medieval Europe", "the philosopher", "moral argument", "the constitution", "religious text",
        "ancient empire", "legal precedent", "the court ruling", "the revolution", "a syllogism", "virtue ethics",
        "the colonial period", "natural law", "the reformation",
    ),
    "Medicine": (
        "the patient", "clinical symptom", "the diagnosis", "a virus", "blood pressure", "the liver",
        "genetic mutation", "dosage", "the immune response", "chronic disease", "nutrition deficiency",
        "the nervous system", "an antibiotic", "ageing tissue", "the cardiac muscle",
    ),
    "Science and Engineering": (
        "the electron", "a chemical reaction", "the integral", "an algorithm", "the circuit", "kinetic energy",
        "the polynomial", "a cell membrane", "the probability distribution", "a neural network", "the orbit",
        "thermodynamics", "the matrix", "a compiler", "an encryption key",
    ),
    "Social Science": (
        "the inflation rate", "voters", "public policy", "the economy", "a survey of adults", "the government",
        "cultural norms", "foreign policy", "market demand", "social behaviour", "the election", "unemployment",
        "cognitive development", "a trade agreement", "urban geography",
    ),
    "World Knowledge": (
        "a famous film", "the capital city", "a sports team", "a popular song", "world population",
        "a national holiday", "the tallest building", "a football season", "an actor", "a currency",
        "a well-known novel", "a record year", "the olympic games", "a television series", "a landmark",
    ),
    "Language": (
        "the sentence", "an adjective", "word order", "a sarcastic remark", "the pronoun", "a translation",
        "the paraphrase", "alphabetical order", "an ambiguous phrase", "a pun", "the grammar",
        "an idiom", "the verb tense", "the antecedent", "a spelling error",
    ),
    "Reasoning": (
        "the statement", "a sequence of steps", "the premise", "a set of objects", "the truth value",
        "a logical deduction", "the arithmetic expression", "a swap of positions", "the shapes", "the date",
        "a chain of claims", "the number of items", "the final position", "a conditional rule", "the order",
    ),
}


FALLBACK = "World Knowledge"

TEMPLATES: tuple[str, ...] = (
    "In {subject}, which of the following best describes {a}?",
    "Which statement about {a} and {b} is correct in {subject}?",
    "A question on {subject}: how does {a} affect {b}?",
    "Consider {a}. According to {subject}, what follows for {b}?",
    "Which option explains the relation between {a} and {b}?",
    "True or false: in {subject}, {a} always determines {b}.",
    "What is the most likely outcome when {a} meets {b}?",
    "Select the answer that correctly identifies {a} in {subject}.",
    "Why is {a} important for understanding {b}?",
    "Given {a}, which of these claims about {b} is valid?",
)


def generate_questions(benchmark: str, category: str, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` template questions for ``benchmark`` drawn from ``category``'s vocabulary.

    Parameters
    ----------
    benchmark
        Benchmark name; its words (``college_chemistry`` → "college chemistry") are the subject.
    category
        One of :data:`VOCABULARY`'s keys (others fall back to World Knowledge).
    n
        Number of questions.
    rng
        Source of randomness (the caller seeds it per benchmark).
    """
    words = VOCABULARY.get(category, VOCABULARY[FALLBACK])
    subject = benchmark.replace("_", " ")
    out = []
    for _ in range(n):
        template = TEMPLATES[rng.integers(len(TEMPLATES))]
        a, b = rng.choice(len(words), size=2, replace=False)
        out.append(template.format(subject=subject, a=words[a], b=words[b]))
    return out


def write_questions(
    directory: str | os.PathLike,
    benchmarks: Sequence[str],
    categories: Sequence[str],
    *,
    seed: int = DEFAULTS.seed,
    min_questions: int = 20,
    max_questions: int = 60,
) -> Path:
    """Write ``DIR/<benchmark>.jsonl`` (one ``{"question": ...}`` per line) for every benchmark.

    Each benchmark's questions come from its own stream (``SeedSequence(seed, spawn_key=(2, i))``,
    i = its position; distinct from the NLL streams), so a file does not depend on the others.
    """
    directory = Path(directory)
    paths = [question_path(directory, name) for name in benchmarks]  # every name checked before writing
    directory.mkdir(parents=True, exist_ok=True)
    for i, (name, category, path) in enumerate(zip(benchmarks, categories, paths)):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, i)))
        n = int(rng.integers(min_questions, max_questions + 1))
        write_question_file(path, generate_questions(name, category, n, rng))
    return directory
