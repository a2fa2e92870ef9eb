"""safetensors files filled tensor by tensor as the tensors arrive, each written and freed once complete.

The files and the names each holds are planned up front (with every tensor's size); a tensor that arrives is
kept until the last one of its file has arrived, then the file is written and its tensors let go. So what is
held at once is the file being filled (plus a second one while two interleave) and the group just handed in,
never all the files. :attr:`StreamedSafetensors.peak_held_bytes` records the most bytes held at once: what
was buffered and not yet written plus the group being handed in, counted as each group arrives.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file
from torch import Tensor


def tensor_bytes(t: Tensor) -> int:
    """Bytes of ``t``'s elements (what it takes in a safetensors file)."""
    return t.numel() * t.element_size()


class StreamedSafetensors:
    """Planned safetensors files in ``folder``, each written as soon as its last tensor arrives.

    Args:
        folder: Where the files go.
        files: Each file's name -> the tensor names it holds.
        sizes: Each file's name -> the planned bytes of each of its tensors (checked on arrival).
        metadata: Each file's name -> its safetensors header metadata (None: none).
    """

    def __init__(self, folder: Path, files: dict[str, list[str]], sizes: dict[str, dict[str, int]],
                 metadata: dict[str, dict[str, str] | None]) -> None:  # fmt: skip
        self.folder = folder
        self._pending = {file: set(names) for file, names in files.items()}
        self._sizes = sizes
        self._metadata = metadata
        self._buffers: dict[str, dict[str, Tensor]] = {file: {} for file in files}
        self.held_bytes = 0
        self.peak_held_bytes = 0
        self.written: list[str] = []

    def add_group(self, items: list[tuple[str, str, Tensor]]) -> None:
        """Take a group of ``(file, name, tensor)``; write every file it completes.

        Raises:
            ValueError: A tensor not in the plan, given twice, or of another size than planned.
        """
        self.peak_held_bytes = max(
            self.peak_held_bytes, self.held_bytes + sum(tensor_bytes(t) for _, _, t in items)
        )
        for file, name, tensor in items:
            self._add(file, name, tensor)

    def _add(self, file: str, name: str, tensor: Tensor) -> None:
        pending = self._pending.get(file)
        if pending is None or name not in pending:
            raise ValueError(f"{name!r} is not planned for {file} (or came twice)")
        if tensor_bytes(tensor) != self._sizes[file][name]:
            raise ValueError(f"{name!r}: {tensor_bytes(tensor)} bytes, {self._sizes[file][name]} planned")
        pending.discard(name)
        self._buffers[file][name] = tensor.contiguous()
        self.held_bytes += tensor_bytes(tensor)
        if not pending:
            buffer = self._buffers.pop(file)
            save_file(buffer, self.folder / file, metadata=self._metadata.get(file))
            self.held_bytes -= sum(tensor_bytes(t) for t in buffer.values())
            del self._pending[file]
            self.written.append(file)

    def close(self) -> None:
        """Check every planned file was written.

        Raises:
            ValueError: Some tensors never arrived.
        """
        if self._pending:
            missing = sorted(f"{file}:{name}" for file, names in self._pending.items() for name in names)
            raise ValueError(f"{len(missing)} planned tensors never arrived: {missing[:3]}")
