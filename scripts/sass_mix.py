"""The instruction mix of each CUDA kernel's main loop, read statically from its SASS.

No GPU is needed: ``cuobjdump -sass`` prints the machine code nvcc produced for every
kernel image of the built library. A loop is the address range of a backward branch
(``BRA`` to an earlier address); the *main loop* of a kernel is

* for a kernel with tensor-core instructions (the convolution GEMMs): the innermost
  loop that holds HMMA/HGMMA instructions, the one holding the most of them if
  several do; its cost is reported as issue slots per tensor-core instruction;
  (FFMA/DFMA for the instantiations without tensor cores);
* otherwise (the memory-bound kernels): the smallest loop that stores to global
  memory, i.e. the loop over output elements, with the loops nested in it listed as
  well (e.g. the taps of a pooling window), whose trip counts are not in the code:
  per-element costs at a given shape come from combining these static counts with
  the dynamic counts of the emulator.

Each instruction is put in one class (global load/store, shared load/store, tensor
core, floating point, integer and address arithmetic, control, barrier, other), and
integer divisions and remainders by a runtime value are counted separately: nvcc
expands each into ~20 instructions that start with an ``I2F...RP`` + ``MUFU.RCP``
reciprocal estimate, so that opcode marks one division. Calls (``CALL``) are counted
too (64-bit division and other software routines are subroutines).

    python scripts/sass_mix.py                  # every kernel, sm_80 and sm_90
    python scripts/sass_mix.py --arch 90 --kernel lrn
    python scripts/sass_mix.py --markdown docs/sass_mix.md
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

CLASSES = ("global load", "global store", "shared load", "shared store", "tensor core",
           "float", "integer", "control", "barrier", "other")

_INSTRUCTION = re.compile(
    r"\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*)(.*?);")
_FLOAT = ("FADD", "FMUL", "FFMA", "FMNMX", "FSETP", "FSEL", "FCHK", "MUFU", "HADD2", "HMUL2",
          "HFMA2", "HMNMX2", "HSETP2", "F2F", "F2FP", "FRND", "DADD", "DMUL", "DFMA", "DSETP",
          "FSET", "HSET2")
_INTEGER = ("IMAD", "IADD3", "IADD", "LEA", "SHF", "SHL", "SHR", "LOP3", "LOP", "ISETP", "IABS",
            "SEL", "IMNMX", "VIMNMX", "MOV", "PRMT", "I2F", "F2I", "I2I", "POPC", "FLO", "BREV",
            "IMUL", "UIADD3", "UIMAD", "ULEA", "USHF", "ULOP3", "UISETP", "UMOV", "USEL", "ULDC",
            "S2R", "S2UR", "CS2R", "R2UR", "PLOP3", "P2R", "R2P", "IDP", "UPRMT", "UFLO", "I2FP",
            "F2IP", "VOTEU", "VOTE", "SHFL")
_CONTROL = ("BRA", "BRX", "JMP", "JMX", "EXIT", "RET", "CALL", "BSSY", "BSYNC", "BREAK", "BMOV",
            "WARPSYNC", "YIELD", "NOP", "KILL", "BPT", "NANOSLEEP")
_BARRIER = ("BAR", "DEPBAR", "MEMBAR", "ERRBAR", "CCTL", "SYNCS", "ARRIVES")


@dataclass(frozen=True)
class Instruction:
    address: int
    opcode: str  # with modifiers, e.g. "LDG.E.128"
    operands: str

    @property
    def base(self) -> str:
        return self.opcode.split(".")[0]


def classify(opcode: str) -> str:
    """The class of one opcode (with or without modifiers)."""
    base = opcode.split(".")[0]
    if base in ("LDG", "LDGSTS", "LD") or base == "LDGDEPBAR":
        return "global load" if base != "LDGDEPBAR" else "barrier"
    if base in ("STG", "ST", "RED", "ATOMG", "ATOM"):
        return "global store"
    if base in ("LDS", "LDSM", "LDSM16"):
        return "shared load"
    if base in ("STS", "ATOMS"):
        return "shared store"
    if base.endswith("MMA") or base == "HGMMA":
        return "tensor core"
    if base in _FLOAT:
        return "float"
    if base in _INTEGER:
        return "integer"
    if base in _CONTROL:
        return "control"
    if base in _BARRIER:
        return "barrier"
    return "other"


def is_division(instruction: Instruction) -> bool:
    """The reciprocal estimate that starts nvcc's expansion of one integer division."""
    return instruction.base == "I2F" and ".RP" in instruction.opcode


def parse(text: str) -> dict[tuple[int, str], list[Instruction]]:
    """(arch, mangled function name) -> its instructions, from ``cuobjdump -sass`` output."""
    functions: dict[tuple[int, str], list[Instruction]] = {}
    arch, current = 0, None
    for line in text.splitlines():
        if m := re.match(r"\s*arch = sm_(\d+)", line):
            arch = int(m.group(1))
        elif m := re.match(r"\s*Function : (\S+)", line):
            current = functions.setdefault((arch, m.group(1)), [])
        elif current is not None and (m := _INSTRUCTION.match(line)):
            current.append(Instruction(int(m.group(1), 16), m.group(2), m.group(3).strip()))
    return functions


@dataclass(frozen=True)
class Loop:
    start: int  # the branch target
    end: int    # the backward branch itself

    def holds(self, other: Loop) -> bool:
        return self.start <= other.start and other.end <= self.end and self != other

    def body(self, instructions: list[Instruction]) -> list[Instruction]:
        return [i for i in instructions if self.start <= i.address <= self.end]


def loops(instructions: list[Instruction]) -> list[Loop]:
    """Every backward branch's range; a branch to itself (the trap after EXIT) is none."""
    found = set()
    for i in instructions:
        if i.base == "BRA" and (target := re.search(r"0x([0-9a-f]+)", i.operands)):
            start = int(target.group(1), 16)
            if start < i.address:
                found.add(Loop(start, i.address))
    return sorted(found, key=lambda loop: (loop.start, loop.end))


@dataclass
class LoopMix:
    loop: Loop
    classes: Counter = field(default_factory=Counter)
    instructions: int = 0
    divisions: int = 0
    calls: int = 0
    fma: int = 0

    @classmethod
    def of(cls, loop: Loop, instructions: list[Instruction]) -> LoopMix:
        body = loop.body(instructions)
        mix = cls(loop, Counter(classify(i.opcode) for i in body), len(body))
        mix.divisions = sum(is_division(i) for i in body)
        mix.calls = sum(i.base == "CALL" for i in body)
        mix.fma = sum(_is_fma(i) for i in body)
        return mix


@dataclass
class KernelMix:
    arch: int
    name: str
    main: LoopMix | None
    inner: list[LoopMix]
    element_bytes: int
    gemm: bool
    divisions_in_loops: int  # in the outermost loops, so every loop's divisions once

    @property
    def unit(self) -> str:
        """What the main loop's cost is counted per."""
        if not self.gemm or self.main is None:
            return "iteration"
        return "HMMA" if self.main.classes["tensor core"] else "FMA"

    @property
    def slots_per_unit(self) -> float | None:
        """Issue slots of one main-loop iteration per HMMA / FMA (GEMMs) or in all."""
        if self.main is None:
            return None
        per = {"HMMA": self.main.classes["tensor core"], "FMA": self.main.fma}.get(self.unit, 1)
        return self.main.instructions / per


_ELEMENT_BYTES = (("<double", 8), ("<float", 4), ("<__half", 2), ("<__nv_bfloat16", 2))


def element_bytes(short_name: str) -> int:
    """Size of the kernel's first template argument (its element type)."""
    for prefix, size in _ELEMENT_BYTES:
        if prefix in short_name:
            return size
    return 4


def _count(loop: Loop, instructions: list[Instruction], wanted) -> int:
    return sum(wanted(i) for i in loop.body(instructions))


def _is_tensor_core(i: Instruction) -> bool:
    return classify(i.opcode) == "tensor core"


def _is_fma(i: Instruction) -> bool:
    return i.base in ("FFMA", "DFMA", "HFMA2")


def main_loop(instructions: list[Instruction], found: list[Loop], gemm: bool) -> Loop | None:
    """For a GEMM: the innermost loop with the most tensor-core instructions (FMAs for
    the FFMA instantiations). Otherwise the smallest loop that stores to global memory."""
    if gemm:
        for wanted in (_is_tensor_core, _is_fma):
            holding = [loop for loop in found if _count(loop, instructions, wanted)]
            innermost = [loop for loop in holding
                         if not any(loop.holds(other) for other in holding)]
            if innermost:
                return max(innermost,
                           key=lambda loop: (_count(loop, instructions, wanted), -loop.start))
    storing = [loop for loop in found
               if _count(loop, instructions, lambda i: classify(i.opcode) == "global store")]
    if not storing:
        return None
    return min(storing, key=lambda loop: (loop.end - loop.start, loop.start))


# The implicit-GEMM convolution kernels (not their bias / reduction helpers).
GEMM_KERNELS = ("conv2d_relu_forward_kernel", "conv2d_relu_forward_nhwc_kernel",
                "conv2d_relu_grad_input_kernel", "conv2d_relu_grad_weight_kernel<")


def analyse(arch: int, name: str, instructions: list[Instruction]) -> KernelMix:
    found = loops(instructions)
    size = element_bytes(name)
    gemm = name.startswith(GEMM_KERNELS)
    chosen = main_loop(instructions, found, gemm)
    divisions = sum(is_division(i) for loop in found for i in loop.body(instructions)
                    if not any(other.holds(loop) for other in found))
    if chosen is None:
        return KernelMix(arch, name, None, [], size, gemm, divisions)
    inner = [LoopMix.of(loop, instructions) for loop in found if chosen.holds(loop)]
    return KernelMix(arch, name, LoopMix.of(chosen, instructions), inner, size, gemm,
                     divisions)


def read(library: Path, cuobjdump: str) -> list[KernelMix]:
    """The mix of every kernel image in ``library`` (short, demangled names)."""
    from resource_report import demangle, short_kernel_name

    text = subprocess.run([cuobjdump, "-sass", str(library)], capture_output=True, text=True,
                          check=True).stdout
    functions = parse(text)
    names = demangle([mangled for _, mangled in functions])
    return [analyse(arch, short_kernel_name(name), instructions)
            for ((arch, _), instructions), name in zip(functions.items(), names, strict=True)]


HEADER = ["kernel", "arch", "main loop: instructions", "issue slots per", "global ld/st",
          "shared ld/st", "tensor core", "FMA", "float", "integer", "control", "barriers",
          "divisions", "calls", "nested loops: instructions (divisions)",
          "divisions in all loops"]


def row(mix: KernelMix) -> list[str]:
    if mix.main is None:
        return ([mix.name, f"sm_{mix.arch}", "no loop"] + ["-"] * (len(HEADER) - 4)
                + [str(mix.divisions_in_loops)])
    c = mix.main.classes
    slots = mix.slots_per_unit
    per = "iteration" if mix.unit == "iteration" else f"{slots:.1f} per {mix.unit}"
    nested = "; ".join(f"{m.instructions} ({m.divisions})" for m in mix.inner) or "-"
    return [mix.name, f"sm_{mix.arch}", str(mix.main.instructions), per,
            f"{c['global load']}/{c['global store']}", f"{c['shared load']}/{c['shared store']}",
            str(c["tensor core"]), str(mix.main.fma), str(c["float"]), str(c["integer"]),
            str(c["control"]), str(c["barrier"]), str(mix.main.divisions), str(mix.main.calls),
            nested, str(mix.divisions_in_loops)]


def markdown(mixes: list[KernelMix]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row(m)) + " |"
              for m in sorted(mixes, key=lambda m: (m.name, m.arch))]
    return "\n".join(lines) + "\n"


MARKDOWN_PREAMBLE = """# SASS main-loop instruction mix

Generated by `python scripts/sass_mix.py --markdown docs/sass_mix.md` from a build with \
`TORCH_CUDA_ARCH_LIST="8.0;9.0"` (CUDA 13.0); static counts read from `cuobjdump -sass`, \
no GPU involved. The main loop is the innermost loop with the most tensor-core instructions \
(GEMMs: issue slots per HMMA, or per FFMA without tensor cores) or the smallest loop storing \
to global memory (memory-bound kernels: one iteration, each nested loop counted once; the \
nested loops' trip counts, e.g. a pooling window's taps, multiply their share at run time). \
"divisions" counts integer divisions/remainders by runtime values (each ~20 instructions). \
See the script's docstring for the rules.

"""


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from resource_report import cuda_tool, library_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, help="only this arch (80, 90)")
    parser.add_argument("--kernel", help="only kernels whose name contains this")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    mixes = [m for m in read(library_path(), cuda_tool("cuobjdump"))
             if (args.arch is None or m.arch == args.arch)
             and (args.kernel is None or args.kernel in m.name)]
    if not mixes:
        print("no CUDA kernels in the built library (CPU-only build?)")
        return 0
    text = markdown(mixes)
    print(text, end="")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(MARKDOWN_PREAMBLE + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
