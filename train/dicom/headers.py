"""Walk a PACS export of any layout and read each file's DICOM header, never its pixel data.

Files are recognised by content (the ``DICM`` marker of a DICOM Part 10 file), not by name: PACS exports often
have no extensions. Files that are not usable slices are counted by reason (not DICOM, DICOMDIR index, unreadable
header, no UIDs) and the walk goes on.

Speed: pydicom parses (``read_partial``, as ``dcmread`` does) only up to the last attribute needed, never the pixel
data, from the file's first 64 kB read at once, with ``specific_tags`` so other values are skipped unread; the
values are decoded here from the raw text elements (every scanned attribute is a text VR), cheaper than pydicom's
value conversion; files can be spread over ``workers`` processes.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

#: Attributes every slice header carries (all text VRs), beside the join tags of the config.
SCANNED_TAGS = (
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Modality", "SeriesNumber",
    "SeriesDescription", "ImageType", "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing",
    "SliceThickness", "InstanceNumber", "ContrastBolusAgent",
)
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_CHUNK = 256  # files per task sent to a worker process
_HEAD_BYTES = 64 * 1024  # read at once; parsing from memory is twice as fast as from the file object


@dataclasses.dataclass(frozen=True, slots=True)
class SliceHeader:
    """What the import needs from one file's header (positions and spacings in mm, patient LPS axes).

    Attributes:
        path: the file.
        size: file size in bytes (part of the series content hash).
        orientation: ImageOrientationPatient (row then column direction cosines), None when absent.
        position: ImagePositionPatient of the first pixel (mm), None when absent.
        pixel_spacing: PixelSpacing (mm between rows, mm between columns), None when absent.
        slice_thickness: SliceThickness (mm), None when absent.
        keys: the join tags' values (keyword -> stripped text, '' when absent).
    """

    path: str
    size: int
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class: str
    modality: str
    series_number: int | None
    series_description: str
    image_type: tuple[str, ...]
    orientation: tuple[float, ...] | None
    position: tuple[float, ...] | None
    pixel_spacing: tuple[float, ...] | None
    slice_thickness: float | None
    instance_number: int | None
    contrast_agent: str
    keys: tuple[tuple[str, str], ...]

    def key(self, keyword: str) -> str:
        return dict(self.keys).get(keyword, "")


@dataclasses.dataclass
class ScanResult:
    """Headers of the usable files and the files skipped, by reason (reason -> paths)."""

    headers: list[SliceHeader]
    skipped: dict[str, list[str]]

    @property
    def n_files(self) -> int:
        return len(self.headers) + sum(len(v) for v in self.skipped.values())


class HeaderError(Exception):
    """A file that is not a usable DICOM slice; the message is the counted skip reason."""


def _text(raw) -> str:
    """The value of a raw text element (bytes, values split by backslashes) as one stripped string."""
    value = raw.value
    if value is None:
        return ""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            value = value.decode("latin-1")
    return str(value).strip("\x00 ")


def _floats(text: str, n: int, keyword: str) -> tuple[float, ...] | None:
    if not text:
        return None
    try:
        values = tuple(float(v) for v in text.split("\\"))
    except ValueError:
        raise HeaderError(f"unreadable {keyword} {text[:40]!r}") from None
    if len(values) != n:
        raise HeaderError(f"{keyword} has {len(values)} values, expected {n}")
    return values


def _int(text: str) -> int | None:
    try:
        return int(float(text)) if text else None
    except ValueError:
        return None


@functools.lru_cache(maxsize=8)
def _tags(keywords: tuple[str, ...]) -> tuple[list, int]:
    """The tags of ``keywords`` (in order) and the largest, as a plain int."""
    from pydicom.tag import Tag

    tags = [Tag(k) for k in keywords]
    return tags, int(max(tags))


def _parse(fileobj, tags: list, last: int):
    """(dataset with the raw elements of ``tags``, whether parsing got past ``last``, the largest of them)."""
    from pydicom.filereader import read_partial

    passed = []

    def past_last(tag, vr, length) -> bool:
        if int.__gt__(tag, last):  # int's own comparison: BaseTag's operators cost more than the parse
            passed.append(tag)
            return True
        return False

    return read_partial(fileobj, stop_when=past_last, specific_tags=tags), bool(passed)


def read_header(path: str, join_tags: Sequence[str] = ()) -> SliceHeader:
    """Read one file's header (no pixel data).

    Raises:
        HeaderError: not a DICOM Part 10 file, a DICOMDIR, an unreadable header or missing UIDs (the message
            is the skip reason, without the path).
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise HeaderError(f"unreadable file ({exc.strerror})") from None
    if head[128:132] != b"DICM":
        raise HeaderError("not DICOM (no DICM marker at byte 128)")
    keywords = (*SCANNED_TAGS, *join_tags)
    tags, last = _tags(keywords)
    try:
        ds, complete = _parse(io.BytesIO(head), tags, last)
        if not complete and len(head) == _HEAD_BYTES:  # the header goes on past the first bytes read
            with open(path, "rb") as fh:
                ds, _ = _parse(fh, tags, last)
    except Exception as exc:  # pydicom raises many types for broken files
        raise HeaderError(f"unreadable DICOM header ({type(exc).__name__})") from None
    meta = getattr(ds, "file_meta", None)
    if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_SOP_CLASS:
        raise HeaderError("DICOMDIR (an index of the export, not an image)")
    value = {}
    for keyword, tag in zip(keywords, tags):
        element = ds.get_item(tag, keep_deferred=True)  # raw; an empty element's value is None
        value[keyword] = _text(element) if element is not None else ""
    if not value["SOPClassUID"] and meta is not None:
        value["SOPClassUID"] = str(meta.get("MediaStorageSOPClassUID", ""))
    missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID") if not value[k]]
    if missing:
        raise HeaderError(f"no {' / '.join(missing)} (a truncated header, or not an image)")
    thickness = _floats(value["SliceThickness"], 1, "SliceThickness")
    return SliceHeader(
        path=path,
        size=size,
        study_uid=value["StudyInstanceUID"],
        series_uid=value["SeriesInstanceUID"],
        sop_uid=value["SOPInstanceUID"],
        sop_class=value["SOPClassUID"],
        modality=value["Modality"].upper(),
        series_number=_int(value["SeriesNumber"]),
        series_description=value["SeriesDescription"],
        image_type=tuple(v.strip().upper() for v in value["ImageType"].split("\\") if v.strip()),
        orientation=_floats(value["ImageOrientationPatient"], 6, "ImageOrientationPatient"),
        position=_floats(value["ImagePositionPatient"], 3, "ImagePositionPatient"),
        pixel_spacing=_floats(value["PixelSpacing"], 2, "PixelSpacing"),
        slice_thickness=thickness[0] if thickness else None,
        instance_number=_int(value["InstanceNumber"]),
        contrast_agent=value["ContrastBolusAgent"],
        keys=tuple((k, value[k]) for k in join_tags),
    )


def _read_chunk(paths: Sequence[str], join_tags: Sequence[str]) -> list[SliceHeader | str]:
    out: list[SliceHeader | str] = []
    for path in paths:
        try:
            out.append(read_header(path, join_tags))
        except HeaderError as exc:
            out.append(str(exc))
    return out


def walk_files(root: str | Path) -> Iterator[str]:
    """Every regular file under ``root``, in sorted order (symbolic links to folders are not followed)."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                yield path


def scan(root: str | Path, join_tags: Sequence[str] = (), *, workers: int = 1, progress: bool = False) -> ScanResult:
    """Read the header of every file under ``root``.

    Args:
        join_tags: extra DICOM keywords to read (the join keys), kept in :attr:`SliceHeader.keys`.
        workers: processes reading headers; 1 reads in this process.
        progress: show a tqdm bar over files.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    if not Path(root).is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    import pydicom.filereader  # noqa: F401  (imported before the fork, so worker processes start with it)

    paths = list(walk_files(root))
    chunks = [paths[i:i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(paths), desc="DICOM headers", unit="file")
    headers: list[SliceHeader] = []
    skipped: dict[str, list[str]] = {}

    def collect(chunk: Sequence[str], results: list[SliceHeader | str]) -> None:
        for path, result in zip(chunk, results):
            if isinstance(result, str):
                skipped.setdefault(result, []).append(path)
            else:
                headers.append(result)
        if bar is not None:
            bar.update(len(chunk))

    try:
        if workers <= 1 or len(chunks) <= 1:
            for chunk in chunks:
                collect(chunk, _read_chunk(chunk, join_tags))
        else:
            with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
                for chunk, results in zip(chunks, pool.map(_read_chunk, chunks, [tuple(join_tags)] * len(chunks))):
                    collect(chunk, results)
    finally:
        if bar is not None:
            bar.close()
    return ScanResult(headers, skipped)
