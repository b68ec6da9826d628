"""The face+bib rule (app/services/bib_matching.resolve) on hand-made evidence: no networks."""

from __future__ import annotations

from app.services.bib_matching import CONTRADICTED_MARGIN, Candidate, Read, Wanted, resolve

T = 0.48  # the event's threshold
RUNNERS = {"ann": "101", "bob": "202"}  # runner -> bib; "cy" enrolled without a bib


def run(candidates, reads, *, rejected=frozenset(), bibs=None):
    bibs = RUNNERS if bibs is None else bibs
    return resolve(candidates, reads, runner_of_bib={b: r for r, b in bibs.items()}, bib_of_runner=dict(bibs),
                   threshold=T, rejected=set(rejected))


def test_a_face_with_a_read_bib_belongs_to_that_bibs_runner():
    # the face matches ann's selfie too: face+bib; a face with bob's bib and no similar selfie: bib
    wanted = run([Candidate("p1", "f1", "ann", 0.6)], [Read("p1", "f1", "101", 0.99), Read("p1", "f2", "202", 0.98)])
    assert wanted == {("p1", "f1", "ann"): Wanted(0.6, "face+bib"), ("p1", "f2", "bob"): Wanted(None, "bib")}


def test_a_face_match_the_bib_contradicts_needs_a_much_higher_similarity():
    # face f1 carries bob's bib but looks a bit like ann: bob's, and ann does not get it
    assert run([Candidate("p1", "f1", "ann", 0.55)], [Read("p1", "f1", "202", 0.99)]) == {
        ("p1", "f1", "bob"): Wanted(None, "bib")}
    # very similar to ann: the face is ann's, and bob is in the photo by his bib alone
    strong = T + CONTRADICTED_MARGIN + 0.01
    assert run([Candidate("p1", "f1", "ann", strong)], [Read("p1", "f1", "202", 0.99)]) == {
        ("p1", "f1", "ann"): Wanted(strong, "face"), ("p1", None, "bob"): Wanted(None, "bib")}


def test_an_unknown_number_contradicts_runners_enrolled_with_another_bib_only():
    reads = [Read("p1", "f1", "999", 0.99)]  # nobody enrolled wears 999
    assert run([Candidate("p1", "f1", "ann", 0.55)], reads) == {}  # ann wears 101: dropped
    assert run([Candidate("p1", "f1", "cy", 0.55)], reads) == {("p1", "f1", "cy"): Wanted(0.55, "face")}  # no bib on file
    strong = T + CONTRADICTED_MARGIN
    assert run([Candidate("p1", "f1", "ann", strong)], reads) == {("p1", "f1", "ann"): Wanted(strong, "face")}


def test_a_runner_with_bib_and_selfie_gains_bib_only_and_face_only_photos():
    candidates = [Candidate("p2", "f2", "ann", 0.7)]  # p2: her face, bib hidden
    reads = [Read("p1", None, "101", 0.95)]  # p1: her bib read by the whole-photo pass, face not seen
    assert run(candidates, reads) == {("p1", None, "ann"): Wanted(None, "bib"), ("p2", "f2", "ann"): Wanted(0.7, "face")}


def test_one_match_per_runner_and_photo_the_bib_backed_face_first():
    candidates = [Candidate("p1", "f1", "ann", 0.9), Candidate("p1", "f2", "ann", 0.6)]
    reads = [Read("p1", "f2", "101", 0.99), Read("p1", None, "101", 0.9)]
    # f1 looks more like ann, but f2 carries her bib: f2 is hers; f1 goes to nobody (a face has
    # one runner, its best), and the loose read adds nothing
    assert run(candidates, reads) == {("p1", "f2", "ann"): Wanted(0.6, "face+bib")}


def test_not_me_removes_the_runner_whatever_the_source():
    reads = [Read("p1", "f1", "101", 0.99), Read("p2", None, "101", 0.99)]
    wanted = run([Candidate("p1", "f1", "cy", 0.5)], reads, rejected={("p1", "ann"), ("p2", "ann")})
    assert wanted == {("p1", "f1", "cy"): Wanted(0.5, "face")}  # the face may still be someone else's


def test_without_reads_it_is_the_face_rule():
    candidates = [Candidate("p1", "f1", "ann", 0.7), Candidate("p1", "f1", "cy", 0.8),
                  Candidate("p1", "f2", "cy", 0.6), Candidate("p1", "f3", "bob", 0.4)]
    # f1 -> its best (cy); f2's best is cy too but cy keeps f1 (0.8); f3 is under the threshold
    assert run(candidates, []) == {("p1", "f1", "cy"): Wanted(0.8, "face")}


def test_a_face_match_and_a_read_of_the_same_runner_elsewhere_in_the_photo_is_face_plus_bib():
    wanted = run([Candidate("p1", "f1", "ann", 0.6)], [Read("p1", None, "101", 0.9)])
    assert wanted == {("p1", "f1", "ann"): Wanted(0.6, "face+bib")}


def test_the_most_confident_read_of_a_face_counts():
    reads = [Read("p1", "f1", "202", 0.7), Read("p1", "f1", "101", 0.99)]
    assert run([], reads) == {("p1", "f1", "ann"): Wanted(None, "bib")}
