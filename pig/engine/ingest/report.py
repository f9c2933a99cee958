"""What one indexing run did: counts, failures, what was passed over."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pig.engine.display import display_path
from pig.engine.media.walk import by_extension


@dataclass
class IndexReport:
    """What one run did. ``skipped`` counts plan reasons (unchanged, touched, failed);
    ``skipped_paths`` holds the (path, reason) of what discovery passed over: folders that
    could not be read, FIFOs, sockets, devices and broken or looping symlinks;
    ``other_files`` the files of the walked folders that are no video by extension (or
    match no ``--glob``)."""

    files: int = 0
    indexed: int = 0
    segments: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped_paths: list[tuple[str, str]] = field(default_factory=list)
    other_files: list[str] = field(default_factory=list)
    partial: set[str] = field(default_factory=set)  # files committed in part (a rerun resumes)
    seconds: float = 0.0
    commits: int = 0
    interrupted: int = 0  # the signal (SIGINT, SIGTERM) that stopped the run early, or 0
    moved: int = 0  # sync: files recognised at a new path (vectors kept)
    removed: int = 0  # sync: files gone from the folders, removed from the index
    missing: int = 0  # not a sync: indexed files under the folders missing on disk

    @property
    def videos_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds > 0 else 0.0

    def summary(self, verbose: bool = False) -> str:
        """The run in a few lines; ``verbose`` lists each file passed over by extension."""
        reasons = {"failed": "failed before, unchanged"}
        skipped = ", ".join(f"{n} {reasons.get(why, why)}"
                            for why, n in sorted(self.skipped.items()))
        lines = [
            f"{self.files} files: {self.indexed} indexed, {len(self.failed)} failed, "
            f"{sum(self.skipped.values())} skipped{f' ({skipped})' if skipped else ''}; "
            f"{self.seconds:.1f} s, {self.videos_per_second:.2f} videos/s; {self.segments} segments"
        ]
        if self.moved or self.removed:
            lines.append(f"sync: {self.moved} moved or renamed (kept, not encoded again), "
                         f"{self.removed} removed (gone from the folders)")
        if self.missing:
            lines.append(f"{self.missing} indexed files under these folders are missing on "
                         "disk: `pig-engine sync` removes them and recognises moved ones")
        if self.skipped.get("failed"):
            lines.append("(--retry-failed decodes files that failed before again)")
        lines += [f"failed: {display_path(path)}: {display_path(reason)}"
                  for path, reason in self.failed]
        lines += [f"skipped: {display_path(path)}: {reason}" for path, reason in self.skipped_paths]
        if self.other_files:
            lines.append(f"passed over by extension: {len(self.other_files)} files "
                         f"({by_extension(self.other_files)})"
                         + ("" if verbose else "; -v lists them"))
            if verbose:
                lines += [f"passed over: {display_path(p)}" for p in self.other_files]
        if self.interrupted:
            left = self.files - self.indexed - len(self.failed) - sum(self.skipped.values())
            part = f" ({len(self.partial)} of them in part)" if self.partial else ""
            lines.append(f"interrupted: {left} files not done{part}; the work encoded so far "
                         "is committed: run again to resume")
        return "\n".join(lines)
