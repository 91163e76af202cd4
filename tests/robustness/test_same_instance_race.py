"""Concurrent stores of one SOP Instance UID: four real `storescu` processes send the same
SOP Instance UID at once, with different bytes (in one series, or each in its own series) or
with the same bytes, for several rounds. The file in the spool and its row in the job store
must describe the same instance, one sender must win, the others must be told, and no file may
be left that no row records. A second test plants such an orphan and restarts the node."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from support.node_process import NodeProcess
from support.tools import dcmtk

from node.receiver import status
from node.receiver.scp import DIFFERENT_CONTENT
from node.synthetic import SeriesGeometry, write_series

SENDERS = 4
ROUNDS = 10
_STATUS = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 256 x 256 CT slice (~130 KB): large enough that writing it takes a moment."""
    return write_series(tmp_path_factory.mktemp("base"),
                        SeriesGeometry(rows=256, columns=256, slices=1))[0]


def variant(base: Path, out: Path, sop_uid: str, sender: int, series_uid: str | None) -> Path:
    """``base`` as SOP Instance ``sop_uid``, marked by its sender (a comment of a length of
    its own, so each copy's size differs too), optionally moved to another series."""
    ds = pydicom.dcmread(base)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.ImageComments = f"sender {sender} " + "x" * (2 * sender)
    if series_uid is not None:
        ds.SeriesInstanceUID = series_uid
    ds.save_as(out)
    return out


def store_at_once(port: int, files: list[Path]) -> list[int]:
    """Start one `storescu` per file at the same moment; the DIMSE status each one got."""
    procs = [subprocess.Popen([dcmtk("storescu"), "-d", "-aec", "RADNODE", "127.0.0.1",
                               str(port), str(f)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for f in files]
    statuses = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        found = _STATUS.findall(out)
        statuses.append(int(found[-1], 16) if found else -1)
    return statuses


@dataclass
class Figures:
    rounds: int = 0
    not_one_winner: list[str] = field(default_factory=list)  # rounds without exactly one
    losers_not_told: int = 0  # a sender of different bytes answered Success, not the winner
    row_file_mismatch: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)


def dataset(path: Path) -> pydicom.Dataset:
    ds = pydicom.dcmread(path)
    del ds.file_meta
    return ds


def race(node: NodeProcess, base: Path, work: Path, mode: str, rounds: int) -> Figures:
    """``rounds`` rounds of SENDERS concurrent stores of one new SOP Instance UID each."""
    figures = Figures()
    spool = node.data_dir / "spool"
    for r in range(rounds):
        uid = generate_uid()
        folder = work / f"{mode}-{r}"
        folder.mkdir(parents=True)
        if mode == "same-bytes":
            one = variant(base, folder / "0.dcm", uid, 0, None)
            files = [one] * SENDERS
        else:
            files = [variant(base, folder / f"{k}.dcm", uid, k,
                             generate_uid() if mode == "different-series" else None)
                     for k in range(SENDERS)]
        statuses = store_at_once(node.port, files)
        for s in statuses:
            figures.statuses[s] = figures.statuses.get(s, 0) + 1
        figures.rounds += 1
        row = node.store().instance(uid)
        if row is None:
            figures.row_file_mismatch.append(f"round {r}: no row")
            continue
        stored = spool / row.path
        if not stored.is_file() or stored.stat().st_size != row.size:
            figures.row_file_mismatch.append(f"round {r}: size/path")
            continue
        on_disk = dataset(stored)
        if (on_disk.SeriesInstanceUID != row.series_uid
                or on_disk.StudyInstanceUID != row.study_uid
                or on_disk.SOPInstanceUID != uid):
            figures.row_file_mismatch.append(f"round {r}: UIDs")
        if mode == "same-bytes":
            if on_disk != dataset(files[0]) or statuses != [status.SUCCESS] * SENDERS:
                figures.not_one_winner.append(f"round {r}: {statuses}")
            continue
        winners = [k for k, s in enumerate(statuses) if s == status.SUCCESS]
        if len(winners) != 1:
            figures.not_one_winner.append(f"round {r}: {statuses}")
        # the stored copy is the one whose sender got Success; any other Success is a lie
        holder = [k for k in range(SENDERS) if on_disk == dataset(files[k])]
        if len(holder) != 1 or holder[0] not in winners:
            figures.row_file_mismatch.append(f"round {r}: stored copy {holder}, "
                                             f"Success to {winners}")
        figures.losers_not_told += len([k for k in winners if k not in holder])
    known = node.store().known_paths()
    figures.orphans = sorted(p for p in (str(f.relative_to(spool)) for f in spool.rglob("*.dcm"))
                             if p not in known and not p.startswith("."))
    return figures


def counts_agree(node: NodeProcess) -> list[str]:
    """Series whose instance_count differs from the rows that name them."""
    store = node.store()
    try:
        return [s.series_uid for s in store.all_series()
                if s.instance_count != len(store.instance_paths(s.series_uid))]
    finally:
        store.close()


@pytest.mark.parametrize("mode", ["same-series", "different-series", "same-bytes"])
def test_four_senders_one_instance(node_factory, base, tmp_path, mode) -> None:
    node = node_factory({"storage": {"fsync": True}, "node": {"log_level": "INFO",
                                                               "max_associations": 16}})
    figures = race(node, base, tmp_path / "files", mode, ROUNDS)
    print(f"{mode}: {len(figures.not_one_winner)} rounds without one winner, "
          f"{len(figures.row_file_mismatch)} rows not matching their file, "
          f"{figures.losers_not_told} losers answered Success, {len(figures.orphans)} orphans, "
          f"statuses {figures.statuses}")
    assert figures.rounds == ROUNDS
    assert not figures.row_file_mismatch, figures
    assert not figures.not_one_winner, figures
    assert figures.losers_not_told == 0, figures
    assert not figures.orphans, figures
    assert not counts_agree(node)
    if mode != "same-bytes":
        assert figures.statuses == {status.SUCCESS: ROUNDS,
                                    DIFFERENT_CONTENT: ROUNDS * (SENDERS - 1)}
        assert node.log().count("already stored with different content") == \
            ROUNDS * (SENDERS - 1)
    assert not list((node.data_dir / "spool" / ".tmp").iterdir())


def test_restart_quarantines_a_second_copy_of_a_recorded_instance(
        node_factory, base, tmp_path) -> None:
    """What the race left before the fix (and what a copy by hand leaves): a second file of a
    recorded SOP Instance UID in another series. Recovery moves it to the quarantine, logs it
    and counts it; the row and its file stay; a file whose row was lost is still recorded."""
    node = node_factory({"node": {"log_level": "INFO"}})
    uid = generate_uid()
    kept = variant(base, tmp_path / "kept.dcm", uid, 0, None)
    assert store_at_once(node.port, [kept]) == [status.SUCCESS]
    node.stop()
    spool = node.data_dir / "spool"
    row = node.store().instance(uid)
    assert row is not None
    other_series = generate_uid()
    orphan = spool / row.study_uid / other_series / f"{uid}.dcm"
    orphan.parent.mkdir(parents=True)
    variant(base, orphan, uid, 1, other_series)
    lost_uid = generate_uid()  # a whole file whose row a power loss took: recorded again
    lost = spool / row.study_uid / row.series_uid / f"{lost_uid}.dcm"
    variant(base, lost, lost_uid, 2, None)
    garbage = spool / row.study_uid / row.series_uid / f"{generate_uid()}.dcm"
    garbage.write_bytes(b"not dicom")
    node.start()
    assert not orphan.exists() and not garbage.exists()
    quarantined = sorted(p.relative_to(spool / ".quarantine")
                         for p in (spool / ".quarantine").rglob("*.dcm"))
    assert [str(p) for p in quarantined] == sorted(
        str(p.relative_to(spool)) for p in (orphan, garbage))
    moved = pydicom.dcmread(spool / ".quarantine" / orphan.relative_to(spool))
    assert moved.ImageComments.startswith("sender 1")  # nothing lost: the copy is whole, just moved
    store = node.store()
    assert store.instance(uid) == row and (spool / row.path).is_file()
    assert store.has_instance(lost_uid)
    assert store.series(other_series) is None
    log = node.log()
    assert f"duplicates instance {uid}" in log
    assert "re-recorded 1 instances, quarantined 2 files" in log
    node.stop()
    node.start()  # the quarantine is not looked at again
    assert node.log().count("quarantined 2 files") == 1


def test_resend_in_another_transfer_syntax_and_after_the_file_was_removed(
        node_factory, base, tmp_path) -> None:
    """A re-send is recognised by its content, not its encoding: the same instance sent again
    in Implicit VR gets Success and the Explicit VR copy stays; another copy is refused with
    DIFFERENT_CONTENT. A recorded file removed by hand is replaced by the next re-send."""
    node = node_factory({"node": {"log_level": "INFO"}})
    uid = generate_uid()
    first = variant(base, tmp_path / "first.dcm", uid, 0, None)
    other = variant(base, tmp_path / "other.dcm", uid, 1, None)
    assert store_at_once(node.port, [first]) == [status.SUCCESS]
    row = node.store().instance(uid)
    assert row is not None and row.transfer_syntax == "1.2.840.10008.1.2.1"
    implicit = subprocess.run([dcmtk("storescu"), "-d", "-xi", "-aec", "RADNODE", "127.0.0.1",
                               str(node.port), str(first)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=60).stdout
    assert "Little Endian Explicit -> Little Endian Implicit" in implicit
    assert [int(s, 16) for s in _STATUS.findall(implicit)] == [status.SUCCESS]
    assert store_at_once(node.port, [other]) == [DIFFERENT_CONTENT]
    assert node.store().instance(uid) == row
    spool = node.data_dir / "spool"
    assert dataset(spool / row.path) == dataset(first)
    (spool / row.path).unlink()
    assert store_at_once(node.port, [first]) == [status.SUCCESS]
    assert dataset(spool / row.path) == dataset(first)
    assert "its recorded file was missing" in node.log()
    assert node.store().count_instances() == 1
