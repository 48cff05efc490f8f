"""LIU on paraphrase suites written blind (tests/data/liu, see the READMEs there) and on fuzzed
word salad: consistency, separation, idempotence, and well-formed English output.

The suites, all written blind by helpers who never read the rules, and all tuned on by now (see
docs/instruction.md for when each was first scored and read): blind-dev, blind-heldout, other,
blind2, blind3-dev, blind3-heldout, blind4 and blind5-a (liu_blind2 to liu_blind5; half b of
liu_blind5 and liu_blind6 stay outside the repository, so that a later round can still measure on
text nobody tuned on, with benchmarks/liu.py --suite). The bars are the issue's: >= 90 % of
edits with one canonical form, no output shared between two edits, idempotent, and no malformed
canonical output; here they guard against regressions on tuned text.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from gie_core.instruction import clean, is_canonical, unify, unify_batch
from gie_core.instruction.core import rules_output
from gie_core.instruction.lexicon import LEX, lemma
from gie_core.instruction.wellformed import check

DATA = Path(__file__).parent / "data" / "liu"
SUITES = {"blind-dev": "benchmark_dev.jsonl", "blind-heldout": "benchmark_heldout.jsonl",
          "other": "other_suite.jsonl", "blind2": "blind2_suite.jsonl", "blind3-dev": "blind3_dev.jsonl",
          "blind3-heldout": "blind3_heldout.jsonl", "blind4": "blind4_suite.jsonl", "blind5-a": "blind5_a.jsonl"}


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / SUITES[name]).read_text("utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module", params=sorted(SUITES))
def suite(request):
    edits = load(request.param)
    texts = [p for e in edits for p in e["phrasings"]]
    outs = dict(zip(texts, unify_batch(texts)))
    return request.param, edits, outs


def test_suite_files_have_the_promised_shape():
    for name in SUITES:
        edits = load(name)
        assert len(edits) >= 40 and len({e["id"] for e in edits}) == len(edits)
        assert all(len(e["phrasings"]) >= 4 for e in edits)
        pairs = {e["id"]: e.get("pair") for e in edits}
        assert all(pairs.get(p) == i for i, p in pairs.items() if p), "pairs must be reciprocal"
    dev, held = load("blind-dev"), load("blind-heldout")
    assert len(dev) + len(held) >= 150 and not {e["id"] for e in dev} & {e["id"] for e in held}


# Consistency at the end of round 7 (docs/instruction.md): 98.9 % blind-dev, 94.4 % blind-heldout,
# 82.9 % other, 93.3 % blind2, 87.5 % blind3-dev, 88.8 % blind3-heldout, 83.6 % blind4, 80.9 %
# blind5-a -- all tuned on. The floors catch regressions; suites the rules were not tuned on are
# scored by benchmarks/liu.py --suite.
FLOOR = {"blind-dev": 0.97, "blind-heldout": 0.93, "other": 0.81, "blind2": 0.92, "blind3-dev": 0.86,
         "blind3-heldout": 0.87, "blind4": 0.82, "blind5-a": 0.79}


def _consistency(edits, outs) -> float:
    return sum(len({outs[p] for p in e["phrasings"]}) == 1 for e in edits) / len(edits)


def test_consistency_does_not_fall_below_the_measured_floor(suite):
    name, edits, outs = suite
    share = _consistency(edits, outs)
    assert share >= FLOOR[name], f"{name}: {share:.1%} of edits unify to one form"


@pytest.mark.parametrize("name", ["other", "blind3-dev", "blind3-heldout", "blind4", "blind5-a"])
@pytest.mark.xfail(strict=True, reason="the 90 % bar is not met even on these tuned suites (81-89 %); "
                                       "on suites not tuned on it is far lower (docs/instruction.md)")
def test_consistency_bar_on_the_harder_tuned_suites(name):
    edits = load(name)
    outs = dict(zip([p for e in edits for p in e["phrasings"]],
                    unify_batch([p for e in edits for p in e["phrasings"]])))
    assert _consistency(edits, outs) >= 0.9


def test_separation_no_two_edits_share_an_output(suite):
    name, edits, outs = suite
    owner: dict[str, set] = {}
    for e in edits:
        for p in e["phrasings"]:
            owner.setdefault(outs[p], set()).add(e["id"])
    shared = {o: ids for o, ids in owner.items() if len(ids) > 1}
    assert not shared, f"{name}: {shared}"


def test_near_miss_pairs_stay_apart(suite):
    _, edits, outs = suite
    by_id = {e["id"]: {outs[p] for p in e["phrasings"]} for e in edits}
    for e in edits:
        if e.get("pair") in by_id:
            assert not by_id[e["id"]] & by_id[e["pair"]], (e["id"], e["pair"])


def test_idempotent_and_well_formed(suite):
    name, edits, outs = suite
    for text, out in outs.items():
        assert unify(out) == out, (text, out)
        if is_canonical(out):
            assert check(out) == [], (text, out)
        else:
            assert out == clean(text)  # refused: the cleaned input, nothing added


# --- the rules' own output, before the guards in unify ------------------------------------------

_CONTENT_EXEMPT = frozenset(
    "the a an of to with into out on in and make change colour color hair expression background "
    "season weather time day image colours flip rotate degrees invert blur sharpen pixelate add "
    "remove replace wear it zoom crop square vignette increase decrease contrast saturation "
    "slightly years older younger bigger smaller brighter darker style next behind under above "
    "front around across between top horizontally vertically clockwise counterclockwise one write set scene "
    "number turn old reduce".split())


def _input_forms(text: str) -> set[str]:
    """Every form an input word may take in the output: itself, its lemmas, its lexicon values,
    the referent of a pronoun, a number's word."""
    out = set()
    c = clean(text)
    for w in set(re.findall(r"[a-z0-9'-]+", c)) | set(re.findall(r"[a-z0-9']+", c)):
        w = w.strip("'").removesuffix("'s")
        forms = {w, lemma(w, "NOUN"), lemma(w, "VERB"), lemma(w, "ADJ")}
        for f in list(forms):
            for table in ("pronouns", "phrase_synonyms", "materials", "style_synonyms", "weather",
                          "seasons", "times", "expression_synonyms", "expression_verbs",
                          "expression_nouns", "age", "size", "colour_aliases", "state_verbs",
                          "person_hair_adjectives", "style_verbs", "weather_verbs", "age_verbs",
                          "size_verbs", "side_adjectives", "count_words", "state_synonyms",
                          "settings", "age_nouns", "hair_comparatives", "light_sources",
                          "background_synonyms"):
                v = LEX[table].get(f)
                if isinstance(v, str):
                    forms.update(v.split())
            forms.update(LEX["size_nouns"].get(f, {}).values())  # height -> taller / shorter
        for m in re.finditer(r"[a-z]+", " ".join(forms)):
            forms.add(m.group(0))
        out |= forms
    for table in ("phrase_synonyms", "style_synonyms", "materials", "locator_aliases", "state_synonyms",
                  "times", "background_synonyms", "light_sources", "age_nouns", "settings"):
        out |= {w for k, v in LEX[table].items() if " " in k and k in c for w in v.split()}
    if re.search(r"\b(?:extra|additional|another)\b", c):
        out.add("more")  # "two extra birds" -> "add two more birds"
    for cue, implied in ((r"colou?r|desaturat|gr[ae]y ?scale|monochrome", "black white"),
                         (r"outline|edges|contour", "line drawing"),
                         (r"\bburn|ablaze|aflame|flames", "fire"), (r"\bshav|\b(?:remove|off)\b.*\bhair", "bald"),
                         (r"\bsun (?:is |was )?(?:setting|going down)", "sunset"),
                         (r"\bcurl", "curly"), (r"\bbraid", "braided"),
                         (r"\bwriting\b|\bwords\b|\blettering\b|\bwording\b", "text"),
                         (r"\bsun (?:is |was )?(?:rising|coming up)", "sunrise"),
                         (r"\bquarter\b", "90"), (r"\bhalf (?:a )?(?:turn|rotation)", "180"),
                         (r"\bwarm", "warmer"), (r"\bcool", "cooler")):
        if re.search(cue, c):  # "remove the colour" -> "make it black and white"
            out.update(implied.split())
    numbers = {str(v): k for k, v in LEX["numbers"].items() if " " not in k}
    out |= {numbers[w] for w in list(out) if w in numbers}
    return out


def _invented(text: str, out: str) -> list[str]:
    """Content words of a canonical ``out`` that come from nowhere in ``text``."""
    words = {w.strip("'") for w in re.findall(r"[a-z0-9'-]+", re.sub(r"'s\b", "", out).replace("-", " "))}
    return sorted(w for w in words - _CONTENT_EXEMPT - _input_forms(text)
                  if lemma(w, "NOUN") not in _input_forms(text))


def _own_suite() -> list[str]:
    from importlib import resources
    own = json.loads(resources.files("gie_core.instruction").joinpath("data/paraphrase_suite.json")
                     .read_text("utf-8"))
    return [p for e in own["edits"] for p in e["phrasings"]]


@pytest.mark.parametrize("name", sorted(SUITES) + ["own"])
def test_rules_output_is_well_formed_and_invents_nothing(name):
    texts = _own_suite() if name == "own" else [p for e in load(name) for p in e["phrasings"]]
    malformed, invented = [], []
    for t in texts:
        out = rules_output(clean(t))
        if out is None:
            continue
        if check(out):
            malformed.append((t, out, check(out)))
        if _invented(t, out):
            invented.append((t, out, _invented(t, out)))
    assert not malformed
    assert not invented


def _salad_words() -> list[str]:
    # The tuning suites' vocabulary (the held-out suites stay unread here).
    words = {w for e in load("blind-dev") for p in e["phrasings"] for w in p.split()}
    words |= {w for p in _own_suite() for w in p.split()}
    return sorted(words | set(", . ; and then please the a to into with of 's ! but no not".split()))


def test_ten_thousand_word_salads_never_give_malformed_or_unstable_output():
    """Seeded word salad from the tuning suites' vocabulary: unify's result is well-formed English
    that says nothing the salad did not, or the cleaned salad itself; unify is idempotent on it.
    The rules alone (before unify's well-formedness guard) may build a broken clause from salad
    only rarely (2 %): the guard is a net, not the mechanism."""
    rng = random.Random(14)
    words = _salad_words()
    canonical, caught = 0, []
    for _ in range(10_000):
        salad = " ".join(rng.choice(words) for _ in range(rng.randint(1, 9)))
        c = clean(salad)
        if not c:
            continue
        out = rules_output(c)
        if out is not None and check(out):
            caught.append((salad, out))
        final = unify(salad)
        assert unify(final) == final, (salad, final)
        if is_canonical(final):
            canonical += 1
            assert check(final) == [], (salad, final)
            assert not _invented(salad, final), (salad, final)
        else:
            assert final == c
    assert canonical > 100  # the salad exercises the rules, it is not all refused
    assert len(caught) <= 0.02 * canonical, caught[:10]


def test_canonical_forms_parse_as_imperative_clauses_with_a_dependency_parser():
    """Judged by spaCy (independent of the rules): each canonical clause of the blind suites is an
    imperative clause (base-form verb at the root, no subject)."""
    parser = pytest.importorskip("gie_core.instruction.parser")
    if not parser.available():
        pytest.skip("spaCy or its English pipeline is not installed (extra 'nlp')")
    outs = sorted({o for name in SUITES for e in load(name) for o in unify_batch(e["phrasings"])
                   if is_canonical(o)})
    clauses = sorted({c for o in outs for c in o.split("; ")})
    problems = [(c, p) for c, p in zip(clauses, parser.imperative_problems(clauses)) if p]
    # The small English model mis-tags a few imperatives (e.g. "flip" as a noun); allow 2 %.
    assert len(problems) <= 0.02 * len(clauses), problems
