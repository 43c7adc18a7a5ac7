"""Directory archives (format version 6): one archive of a directory tree.

The original of a directory archive is a file index (UTF-8 JSON, `index_len` bytes, named
in the header's `tree` key) followed by the contents of its regular files, in index
order. The index is cut into classical chunks of its own and every file into chunks of
its own, so a file's bytes are whole chunks: one file decodes without decoding any other
(random access through the chunk records, docs/format.md). Layout and the checks made
before anything is written: docs/format.md, "Directory archives".

Extraction writes into a new temporary folder beside the target and renames it into
place only after the whole-content SHA-256 matched, so a refused or damaged archive
leaves nothing under the final name and nothing outside it: every path is checked first
(relative, no `..`, no empty or `.` parts, no NUL or backslash, no duplicates, nothing
below a symbolic link), every link's target is resolved over the archive's own entries
and must stay inside the tree, and links are made last, so no file is ever written
through one.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import stat
import tempfile

from ..errors import FormatError, LimitError, UsageError

TREE_VERSION = 6                     # the format version of directory archives
MAX_INDEX = 1 << 30                  # bytes of file index a reader accepts
MAX_ENTRIES = 1 << 22
MAX_LINK_HOPS = 40
TYPES = ("dir", "file", "link")


# ----------------------------------------------------------------------------- writing

def walk(root: str) -> list[dict]:
    """The entries of the tree at `root` in archive order (sorted, each folder before its
    contents); each has path (relative, '/'-separated), type, mode, mtime_ns, and size
    (files) or target (links). Links are stored, not followed; a link whose target leaves
    the tree, and anything that is not a folder, file or link, is refused."""
    if not os.path.isdir(root):
        raise UsageError(f"{root} is not a folder")
    entries: list[dict] = []

    def visit(folder: str, rel: str) -> None:
        try:
            names = sorted(os.listdir(folder))
        except OSError as e:
            raise UsageError(f"cannot read {folder}: {e.strerror}") from None
        for name in names:
            path = os.path.join(folder, name)
            r = f"{rel}/{name}" if rel else name
            if "\\" in name or "\x00" in name:
                raise UsageError(f"{path}: a name with a backslash cannot be archived")
            st = os.lstat(path)
            e = {"path": r, "mode": stat.S_IMODE(st.st_mode), "mtime_ns": st.st_mtime_ns}
            if stat.S_ISLNK(st.st_mode):
                e.update(type="link", target=os.readlink(path))
                entries.append(e)
            elif stat.S_ISDIR(st.st_mode):
                e["type"] = "dir"
                entries.append(e)
                visit(path, r)
            elif stat.S_ISREG(st.st_mode):
                e.update(type="file", size=st.st_size)
                entries.append(e)
            else:
                raise UsageError(f"{path}: not a file, folder or symbolic link; a directory "
                                 "archive holds only those")

    visit(root, "")
    try:
        check_entries(entries)
    except FormatError as e:
        raise UsageError(f"{root}: {e}") from None
    return entries


def index_bytes(entries: list[dict]) -> bytes:
    return json.dumps({"entries": entries}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


class TreeJob:
    """What compressing a directory needs: the index and the files, read one at a time.
    plan() yields the chunk tasks (index first, then each file's own); after it is
    exhausted, sha256() and original_len describe the whole original."""

    def __init__(self, root: str, entries: list[dict] | None = None,
                 contents: dict | None = None):
        self.root = root
        self.entries = walk(root) if entries is None else entries
        self.contents = contents            # path -> bytes instead of reading (make_golden)
        self.index = index_bytes(self.entries)
        self.files = [e for e in self.entries if e["type"] == "file"]
        self.original_len = len(self.index) + sum(e["size"] for e in self.files)
        self._sha = hashlib.sha256()

    def header(self) -> dict:
        return {"index_len": len(self.index), "files": len(self.files),
                "entries": len(self.entries)}

    def plan(self, comp):
        self._sha = hashlib.sha256(self.index)
        yield from comp.plan_classical(self.index)
        for e in self.files:
            if self.contents is not None:
                data = self.contents[e["path"]]
                yield from self._file_tasks(comp, e, data)
                continue
            path = os.path.join(self.root, *e["path"].split("/"))
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size != e["size"]:
                    raise UsageError(f"{path} changed size while being compressed")
                if size == 0:
                    continue
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                    yield from self._file_tasks(comp, e, data)

    def _file_tasks(self, comp, e, data):
        if len(data) != e["size"]:
            raise UsageError(f"{e['path']} changed size while being compressed")
        for i in range(0, len(data), 1 << 24):
            self._sha.update(data[i:i + (1 << 24)])
        yield from comp.plan(data)

    def sha256(self) -> bytes:
        return self._sha.digest()


# ----------------------------------------------------------------------------- reading

def _check_path(p) -> list[str]:
    if not isinstance(p, str) or not p:
        raise FormatError(f"directory archive: bad path {p!r}")
    if "\x00" in p or "\\" in p:
        raise FormatError(f"directory archive: path {p!r} has a NUL or a backslash")
    if p.startswith("/") or (len(p) > 1 and p[1] == ":"):
        raise FormatError(f"directory archive: absolute path {p!r} refused")
    parts = p.split("/")
    if any(x in ("", ".", "..") for x in parts):
        raise FormatError(f"directory archive: path {p!r} has an empty, '.' or '..' part "
                          "(path traversal refused)")
    return parts


def _resolve(target_parts: list[str], start: list[str], links: dict, hops: int = 0,
             skip: str = ""):
    """Resolve a link target (parts, relative to the folder `start`) over the archive's
    own entries (but the link `skip` itself); FormatError if it leaves the tree. Returns
    the resolved parts."""
    if hops > MAX_LINK_HOPS:
        raise FormatError("directory archive: symbolic links nested too deeply (a loop?)")
    here = list(start)
    for part in target_parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not here:
                raise FormatError("directory archive: a symbolic link leads outside the "
                                  "folder being extracted (refused)")
            here.pop()
            continue
        here.append(part)
        key = "/".join(here)
        if key in links and key != skip:    # a link inside the path: follow it here
            here = _resolve(links[key].split("/"), here[:-1], links, hops + 1, skip)
    return here


def check_entries(entries) -> None:
    """Every rule of docs/format.md's 'Directory archives' that keeps extraction inside
    the target folder; FormatError (exit code 2) on the first broken one."""
    if not isinstance(entries, list):
        raise FormatError("directory archive: the index has no entry list")
    if len(entries) > MAX_ENTRIES:
        raise LimitError("directory archive entries", len(entries), MAX_ENTRIES)
    seen: dict = {}
    links: dict = {}
    for e in entries:
        if not isinstance(e, dict) or e.get("type") not in TYPES:
            raise FormatError(f"directory archive: bad entry {str(e)[:80]!r}")
        parts = _check_path(e.get("path"))
        if e["path"] in seen:
            raise FormatError(f"directory archive: {e['path']!r} appears twice")
        for k in range(1, len(parts)):      # its folders: listed before it, as folders
            parent = "/".join(parts[:k])
            if parent in links:
                raise FormatError(f"directory archive: {e['path']!r} lies below the "
                                  f"symbolic link {parent!r} (refused)")
            if seen.get(parent) != "dir":
                raise FormatError(f"directory archive: {e['path']!r} comes before (or "
                                  f"without) its folder {parent!r}")
        seen[e["path"]] = e["type"]
        mode, mtime = e.get("mode", 0o644), e.get("mtime_ns", 0)
        if not isinstance(mode, int) or not 0 <= mode <= 0o7777 or \
                not isinstance(mtime, int) or isinstance(mode, bool):
            raise FormatError(f"directory archive: bad mode or mtime for {e['path']!r}")
        if e["type"] == "file":
            size = e.get("size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise FormatError(f"directory archive: bad size for {e['path']!r}")
        if e["type"] == "link":
            t = e.get("target")
            if not isinstance(t, str) or not t or "\x00" in t or "\\" in t:
                raise FormatError(f"directory archive: bad link target for {e['path']!r}")
            if t.startswith("/"):
                raise FormatError(f"directory archive: link {e['path']!r} -> {t!r} is "
                                  "absolute (refused)")
            links[e["path"]] = t
    for path, t in links.items():            # with every link known: resolve each
        parts = path.split("/")
        _resolve(t.split("/"), parts[:-1], links, skip=path)


def read_index(dec, f, info) -> list[dict]:
    """The checked entries of a directory archive (decodes the index chunks only)."""
    tree = info.header.get("tree")
    if not isinstance(tree, dict):
        raise FormatError("not a directory archive")
    n = tree.get("index_len")
    if not isinstance(n, int) or not 0 < n <= min(MAX_INDEX, info.footer.original_len):
        raise FormatError(f"directory archive: bad index length {n!r}")
    raw = dec.decompress_range(f, 0, n, info=info)
    try:
        index = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"directory archive: the index is not JSON: {e}") from None
    if not isinstance(index, dict):
        raise FormatError("directory archive: the index is not a JSON object")
    entries = index.get("entries")
    check_entries(entries)
    total = n + sum(e["size"] for e in entries if e["type"] == "file")
    if total != info.footer.original_len:
        raise FormatError(f"directory archive: the index accounts for {total} bytes, the "
                          f"archive holds {info.footer.original_len}")
    return entries


def file_spans(entries, index_len: int) -> dict:
    """path -> (original offset, size) of every file."""
    out, pos = {}, index_len
    for e in entries:
        if e["type"] == "file":
            out[e["path"]] = (pos, e["size"])
            pos += e["size"]
    return out


class TreeWriter:
    """A file-like sink for the decoded original of a directory archive: skips the index,
    writes each file's bytes into a new temporary folder beside `target`; finish() sets
    modes and times, makes the links, and renames the folder into place."""

    def __init__(self, entries, index_len: int, target: str):
        self.entries, self.target = entries, target
        if os.path.lexists(target):
            raise UsageError(f"{target} already exists; a directory archive extracts to a "
                             "new folder (remove it, or give another with -o)")
        parent = os.path.dirname(os.path.abspath(target))
        self.tmp = tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(target) + ".",
                                    suffix=".llmz-tmp")
        self.skip = index_len
        self.files = [e for e in entries if e["type"] == "file"]
        self.k = 0
        self.left = 0
        self.f = None
        for e in entries:
            if e["type"] == "dir":
                os.mkdir(self._path(e), 0o700)
        self._next()

    def _path(self, e) -> str:
        return os.path.join(self.tmp, *e["path"].split("/"))

    def _next(self) -> None:
        """Open the next file (empty ones are made on the way)."""
        while self.left == 0:
            if self.f is not None:
                self.f.close()
                self.f = None
            if self.k >= len(self.files):
                return
            e = self.files[self.k]
            self.k += 1
            fd = os.open(self._path(e), os.O_WRONLY | os.O_CREAT | os.O_EXCL |
                         getattr(os, "O_NOFOLLOW", 0), 0o600)
            self.f = os.fdopen(fd, "wb")
            self.left = e["size"]

    def write(self, b) -> None:
        mv = memoryview(b)
        if self.skip:
            n = min(self.skip, len(mv))
            self.skip -= n
            mv = mv[n:]
        while len(mv):
            if self.f is None:
                raise FormatError("directory archive: more content than its files hold")
            n = min(self.left, len(mv))
            self.f.write(mv[:n])
            self.left -= n
            mv = mv[n:]
            self._next()

    def finish(self) -> None:
        if self.f is not None or self.skip:
            raise FormatError("directory archive: content ends before its files do")
        for e in self.entries:               # links last: nothing is written through one
            if e["type"] == "link":
                os.symlink(e["target"], self._path(e))
        for e in reversed(self.entries):     # deepest first, so folder times stick
            p = self._path(e)
            if e["type"] != "link":
                os.chmod(p, e.get("mode", 0o644) & 0o777)   # no setuid, setgid, sticky
            t = e.get("mtime_ns", 0)
            try:
                os.utime(p, ns=(t, t), follow_symlinks=e["type"] != "link")
            except (NotImplementedError, OSError):
                if e["type"] != "link":
                    raise
        os.chmod(self.tmp, 0o755)
        os.rename(self.tmp, self.target)
        self.tmp = None

    def abort(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
        if self.tmp is not None:
            import shutil
            for folder, dirs, _ in os.walk(self.tmp):
                for d in dirs:                # folders made read-only by their modes
                    try:
                        os.chmod(os.path.join(folder, d), 0o700, follow_symlinks=False)
                    except OSError:
                        pass
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.abort()
        return False


# ----------------------------------------------------------------------------- API

def compress_tree(root: str, model=None, **kw) -> bytes:
    """One-shot: the directory archive of `root` (see Compressor for the options)."""
    from .api import Compressor
    return Compressor(model, **kw).compress_tree(root)


def _open(archive):
    import io
    if isinstance(archive, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(archive))
    if isinstance(archive, (str, os.PathLike)):
        return open(archive, "rb")
    return archive


def list_archive(archive) -> list[dict]:
    """The entries of a directory archive (bytes, path or file object), checked; decodes
    the index only (classical chunks: no model needed)."""
    from .decompressor import Decompressor
    dec = Decompressor()
    f = _open(archive)
    info = dec.open_index(f)
    return read_index(dec, f, info)


def extract_file(archive, name: str, model=None, **kw) -> bytes:
    """The contents of one file of a directory archive, decoding only its chunks (and the
    index's classical ones); extract_file_with(decompressor, ...) to count them."""
    from .decompressor import Decompressor
    return extract_file_with(Decompressor(model, **kw), archive, name)


def extract_file_with(dec, archive, name: str) -> bytes:
    """extract_file with a given Decompressor: dec.chunks_decoded then counts the chunks
    of the file that were decoded."""
    f = _open(archive)
    info = dec.open_index(f)
    entries = read_index(dec, f, info)
    spans = file_spans(entries, info.header["tree"]["index_len"])
    if name not in spans:
        kinds = {e["path"]: e["type"] for e in entries}
        what = f"a {kinds[name]}, not a file" if name in kinds else "not in the archive"
        raise UsageError(f"{name!r} is {what}")
    start, size = spans[name]
    dec.chunks_decoded = 0
    return dec.decompress_range(f, start, size, info=info) if size else b""


def extract(archive, target: str | None, model=None, progress=None, **kw) -> list[dict]:
    """Restore a directory archive into the new folder `target` (names, modes, mtimes,
    links); every check before anything is written, the SHA-256 before the rename.
    target None: decode and check everything, write nothing. Returns the entries."""
    from .decompressor import Decompressor
    return extract_with(Decompressor(model, **kw), archive, target, progress)


def extract_with(dec, archive, target: str | None, progress=None) -> list[dict]:
    f = _open(archive)
    info = dec.open_index(f)
    entries = read_index(dec, f, info)
    h = hashlib.sha256()
    import contextlib
    with (TreeWriter(entries, info.header["tree"]["index_len"], target) if target
          else contextlib.nullcontext()) as w:
        for c in info.chunks:
            f.seek(c.offset)
            raw = dec.decompress_chunk(info, c, f.read(c.coded_len), progress)
            h.update(raw)
            if w is not None:
                w.write(raw)
        if h.digest() != info.footer.sha256:
            from ..errors import ChecksumError
            raise ChecksumError("whole content (SHA-256)", info.footer.sha256.hex(),
                                h.hexdigest())
        if w is not None:
            w.finish()
    return entries
