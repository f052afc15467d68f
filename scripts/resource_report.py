"""Resource usage of every CUDA kernel in the built library, per GPU architecture.

Reads the SASS resource records of ``alexnet_kernels/_C*.so`` with ``cuobjdump
--dump-resource-usage`` (no GPU needed) and prints, per kernel and arch:
registers, stack and local memory (where spills land), static shared memory,
the dynamic shared memory of a representative AlexNet launch, and the
theoretical occupancy at the launcher's block size, computed by CUDA's own
host-side calculator (``cuda_occupancy.h``, see scripts/occupancy.cpp), and
the tensor-core instructions in each kernel's SASS (``cuobjdump -sass``).
``--check`` fails on spills and on a convolution GEMM kernel that does not
multiply the way its template says: HMMA for fp16/bf16 and for fp32 with
TF32 allowed (``<float, true>``), none for the FFMA instantiations.

    python scripts/resource_report.py            # print the table
    python scripts/resource_report.py --check    # also fail on spills / local memory
    python scripts/resource_report.py --markdown docs/resources.md
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KERNEL_HEADERS = REPO / "csrc" / "kernels"

# Dynamic shared memory of a representative launch, per kernel name, from the launch
# plans in the kernel headers: the pipelined convolution forward's ring at every shape
# (kFpropSmemBytes): 3 stages of a 128 x 32 A and a B tile of 2-byte elements (its
# instantiations are fp16 / bf16). No other kernel launches with any.
REPRESENTATIVE_DYNAMIC_SMEM = {
    "conv2d_relu_forward_nhwc_kernel": 2 * 3 * 128 * 32 * 2,
}


def short_kernel_name(demangled: str) -> str:
    """`lrn_forward_kernel<float, true>`: no return type, namespace or parameter list."""
    name = demangled.removeprefix("void ").split("(")[0]
    return name.replace("alexnet_kernels::kernels::", "")


@dataclass
class KernelResources:
    arch: int
    name: str
    registers: int
    stack: int
    local: int
    static_smem: int

    @property
    def base_name(self) -> str:
        return re.sub(r"<.*", "", self.short_name)

    @property
    def short_name(self) -> str:
        return short_kernel_name(self.name)

    @property
    def accumulator_bytes(self) -> int:
        return 8 if "<double" in self.short_name else 4


def library_path() -> Path:
    spec = importlib.util.find_spec("alexnet_kernels._C")
    if spec is None or spec.origin is None:
        sys.exit("alexnet_kernels._C is not built; run `pip install --no-build-isolation -e .`")
    return Path(spec.origin)


def cuda_tool(name: str) -> str:
    """A CUDA binary tool: from the toolkit if it has it, else the copy triton ships."""
    for folder in filter(None, [os.environ.get("CUDA_HOME"), "/usr/local/cuda"]):
        candidate = Path(folder) / "bin" / name
        if candidate.is_file():
            return str(candidate)
    triton_spec = importlib.util.find_spec("triton")
    if triton_spec is not None and triton_spec.origin is not None:
        candidate = Path(triton_spec.origin).parent / "backends" / "nvidia" / "bin" / name
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        sys.exit(f"{name} not found (CUDA toolkit or triton's bundled copy)")
    return found


def demangle(names: list[str]) -> list[str]:
    if not names or shutil.which("c++filt") is None:
        return names
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True,
                         check=True).stdout
    return out.splitlines()


def read_resources(library: Path) -> list[KernelResources]:
    text = subprocess.run([cuda_tool("cuobjdump"), "--dump-resource-usage", str(library)],
                          capture_output=True, text=True, check=True).stdout
    records: list[tuple[int, str, dict[str, int]]] = []
    arch = 0
    function = None
    for line in text.splitlines():
        if m := re.match(r"\s*arch = sm_(\d+)", line):
            arch = int(m.group(1))
        elif m := re.match(r"\s*Function (\S+):", line):
            function = m.group(1)
        elif function is not None and "REG:" in line:
            fields = {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", line)}
            records.append((arch, function, fields))
            function = None
    names = demangle([name for _, name, _ in records])
    return [
        KernelResources(arch, name, f.get("REG", 0), f.get("STACK", 0), f.get("LOCAL", 0),
                        f.get("SHARED", 0))
        for (arch, _, f), name in zip(records, names, strict=True)
    ]


# The convolution kernels that run an implicit GEMM (conv2d_relu.cuh).
GEMM_KERNELS = ("conv2d_relu_forward_kernel", "conv2d_relu_forward_nhwc_kernel",
                "conv2d_relu_grad_input_kernel", "conv2d_relu_grad_weight_kernel")


def read_tensor_core_opcodes(library: Path) -> dict[tuple[int, str], str]:
    """(arch, short kernel name) -> the tensor-core opcodes in its SASS ("HMMA.16816.F32", ...,
    comma-separated), "-" for none."""
    from sass_mix import classify, parse  # imported here: sass_mix imports this module

    text = subprocess.run([cuda_tool("cuobjdump"), "-sass", str(library)],
                          capture_output=True, text=True, check=True).stdout
    functions = parse(text)
    names = demangle([mangled for _, mangled in functions])
    return {(arch, short_kernel_name(name)):
            ", ".join(sorted({i.opcode for i in instructions
                              if classify(i.opcode) == "tensor core"})) or "-"
            for ((arch, _), instructions), name in zip(functions.items(), names, strict=True)}


def tensor_core_problem(short_name: str, opcodes: str) -> str | None:
    """Why a GEMM kernel's SASS contradicts its template, or None."""
    if not short_name.startswith(GEMM_KERNELS):
        return None
    wants_tensor_cores = any(t in short_name for t in ("<__half", "<__nv_bfloat16",
                                                       "<float, true>"))
    has_tensor_cores = "HMMA" in opcodes
    if wants_tensor_cores and not has_tensor_cores:
        return "expected tensor-core (HMMA) instructions, found none"
    if not wants_tensor_cores and has_tensor_cores:
        return f"an FFMA instantiation contains {opcodes}"
    return None


def launch_block_sizes() -> dict[str, int]:
    """Kernel name -> threads per block, from `__launch_bounds__(kConstant) name(` lines."""
    constants: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for header in KERNEL_HEADERS.glob("*.cuh"):
        text = header.read_text()
        constants.update({k: int(v) for k, v in re.findall(r"constexpr int (\w+) = (\d+);", text)})
        for bound, name in re.findall(r"__launch_bounds__\((\w+)\)\s*(\w+)\s*\(", text):
            sizes[name] = int(bound) if bound.isdigit() else constants[bound]
    return sizes


def occupancy(rows: list[tuple[int, int, int, int, int]]) -> list[str]:
    """Theoretical occupancy for (arch, threads, registers, static smem, dynamic smem) rows."""
    cuda_include = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "occupancy"
        subprocess.run(["g++", "-std=c++17", f"-I{cuda_include}",
                        str(REPO / "scripts" / "occupancy.cpp"), "-o", str(binary)], check=True)
        query = "".join(f"{a // 10} {a % 10} {t} {r} {s} {d}\n" for a, t, r, s, d in rows)
        out = subprocess.run([str(binary)], input=query, capture_output=True, text=True,
                             check=True).stdout.splitlines()
    return [f"{line.split()[1]}% ({line.split()[0]} blocks)" if not line.startswith("error")
            else line for line in out]


def build_table(resources: list[KernelResources],
                opcodes: dict[tuple[int, str], str]) -> list[list[str]]:
    sizes = launch_block_sizes()
    missing = sorted({r.base_name for r in resources} - sizes.keys())
    if missing:
        sys.exit(f"no __launch_bounds__ block size found for kernels: {missing}")
    queries = [(r.arch, sizes[r.base_name], r.registers, r.static_smem,
                REPRESENTATIVE_DYNAMIC_SMEM.get(r.base_name, 0) * r.accumulator_bytes // 4)
               for r in resources]
    occupancies = occupancy(queries)
    table = []
    for r, q, occ in zip(resources, queries, occupancies, strict=True):
        table.append([r.short_name, f"sm_{r.arch}", str(q[1]), str(r.registers), str(r.stack),
                      str(r.local), str(r.static_smem), str(q[4]), occ,
                      opcodes.get((r.arch, r.short_name), "?")])
    return sorted(table, key=lambda row: (row[0], row[1]))


HEADER = ["kernel", "arch", "threads", "registers", "stack B", "local B", "static smem B",
          "dynamic smem B (AlexNet)", "theoretical occupancy", "tensor cores (SASS)"]


MARKDOWN_PREAMBLE = """# CUDA kernel resources

Generated by `python scripts/resource_report.py --markdown docs/resources.md` from a build \
with `TORCH_CUDA_ARCH_LIST="8.0;9.0"` (CUDA 13.0). Stack and local memory are where register \
spills land; `--check` fails when either is non-zero. Dynamic shared memory is the \
pipelined convolution forward's 48 KiB ring (any shape); no other kernel uses any (the other \
convolution kernels' GEMM tiles and the channels_last LRN kernels' per-warp rings are static \
shared memory). Occupancy is the \
theoretical one from CUDA's `cuda_occupancy.h` at the launcher's block size (on sm_90 the \
binary reports 1 KiB of static shared memory for kernels that declare none; it is counted in \
the occupancy). The last column lists the tensor-core opcodes in each kernel's SASS: \
`HMMA.16816` is mma.m16n8k16 (fp16/bf16), `HMMA.1688.F32.TF32` the TF32 mma.m16n8k8 that \
fp32 convolutions use when PyTorch allows TF32 (`<float, true>`).

"""


def markdown(table: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if any kernel uses stack or local memory (spills)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    library = library_path()
    if not importlib.import_module("alexnet_kernels._C").with_cuda:
        print(f"{library.name} was built without CUDA kernels (CPU-only build); nothing to report")
        return 0
    resources = read_resources(library)
    if not resources:
        print(f"{library.name} contains no CUDA kernels (CPU-only build); nothing to report")
        return 0
    opcodes = read_tensor_core_opcodes(library)
    table = build_table(resources, opcodes)
    text = markdown(table)
    print(text, end="")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(MARKDOWN_PREAMBLE + text)
    problems = [f"SPILL/LOCAL MEMORY: {r.short_name} sm_{r.arch}: stack {r.stack} B, "
                f"local {r.local} B" for r in resources if r.stack or r.local]
    for row in table:
        if problem := tensor_core_problem(row[0], row[-1]):
            problems.append(f"TENSOR CORES: {row[0]} {row[1]}: {problem}")
    if args.check and problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    if args.check:
        print(f"resource check passed: {len(resources)} kernel images, no stack or local "
              "memory, tensor cores where expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
