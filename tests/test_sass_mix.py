"""The static SASS main-loop analysis (scripts/sass_mix.py) on hand-written listings whose
counts are known, and on the built library when it has CUDA kernels."""

from __future__ import annotations

import pytest
import sass_mix  # scripts/sass_mix.py


def listing(function: str, body: list[str], arch: int = 80) -> str:
    """A ``cuobjdump -sass`` listing of one function: one instruction per 16 bytes, each
    followed by the encoding line cuobjdump prints."""
    lines = [f"\tarch = sm_{arch}", f"\t\tFunction : {function}",
             '\t.headerflags\t@"EF_CUDA_SM80 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM80)"']
    for index, text in enumerate(body):
        lines.append(f"        /*{16 * index:04x}*/                   {text} ;"
                     "                      /* 0x000fe40000000f00 */")
        lines.append("                                                    /* 0x000fe40000000f00 */")
    return "\n".join(lines) + "\n"


# A GEMM-like kernel: an outer loop (0x10-0x90) around an inner loop (0x30-0x70) that
# holds 2 HMMA, 1 LDS, 1 IADD3 and its branch: 5 instructions, 2.5 per HMMA.
GEMM = [
    "S2R R0, SR_TID.X",                          # 0x00
    "LDG.E.128 R4, desc[UR4][R2.64]",            # 0x10 outer loop start
    "STS.128 [R0], R4",                          # 0x20
    "LDS R8, [R0]",                              # 0x30 inner loop start
    "HMMA.16816.F32 R12, R8, R10, R12",          # 0x40
    "HMMA.16816.F32 R16, R8, R10, R16",          # 0x50
    "IADD3 R1, R1, 0x1, RZ",                     # 0x60
    "@P0 BRA 0x30",                              # 0x70 inner back edge
    "BAR.SYNC.DEFER_BLOCKING 0x0",               # 0x80
    "@!P1 BRA 0x10",                             # 0x90 outer back edge
    "STG.E [R2.64], R12",                        # 0xa0
    "EXIT",                                      # 0xb0
    "BRA 0xc0",                                  # 0xc0 the trap after EXIT: not a loop
]

# A memory-bound kernel: one loop (0x10-0x80) over outputs with one runtime division
# (I2F.U32.RP starts it), a nested tap loop (0x30-0x50) and a store.
POOL = [
    "S2R R0, SR_TID.X",                          # 0x00
    "I2F.U32.RP R5, R4",                         # 0x10 loop start
    "MUFU.RCP R5, R5",                           # 0x20
    "LDG.E R6, desc[UR4][R2.64]",                # 0x30 tap loop start
    "FMNMX R7, R7, R6, !PT",                     # 0x40
    "@P2 BRA 0x30",                              # 0x50 tap back edge
    "STG.E [R8.64], R7",                         # 0x60
    "CALL.REL.NOINC 0x100",                      # 0x70
    "@P0 BRA 0x10",                              # 0x80 output back edge
    "EXIT",                                      # 0x90
]

GEMM_NAME = "conv2d_relu_forward_kernel<__half, false>"
POOL_NAME = "max_pool_forward_kernel<float, unsigned char>"


def analysed(name: str, body: list[str]):
    ((arch, _), instructions), = sass_mix.parse(listing("_Z1kv", body)).items()
    return sass_mix.analyse(arch, name, instructions)


def test_parse_reads_addresses_opcodes_and_predicated_instructions() -> None:
    ((arch, function), instructions), = sass_mix.parse(listing("_Z1kv", GEMM, 90)).items()
    assert (arch, function) == (90, "_Z1kv")
    assert len(instructions) == len(GEMM)
    assert instructions[7] == sass_mix.Instruction(0x70, "BRA", "0x30")
    assert instructions[1].opcode == "LDG.E.128"


def test_loops_are_back_edges_and_the_trap_is_not_one() -> None:
    ((_, _), instructions), = sass_mix.parse(listing("_Z1kv", GEMM)).items()
    assert sass_mix.loops(instructions) == [sass_mix.Loop(0x10, 0x90), sass_mix.Loop(0x30, 0x70)]


def test_the_gemm_main_loop_is_the_innermost_with_tensor_cores() -> None:
    mix = analysed(GEMM_NAME, GEMM)
    assert mix.main is not None and mix.main.loop == sass_mix.Loop(0x30, 0x70)
    assert mix.unit == "HMMA"
    assert mix.main.instructions == 5
    assert mix.slots_per_unit == 2.5
    assert mix.main.classes == {"shared load": 1, "tensor core": 2, "integer": 1, "control": 1}


def test_the_memory_bound_main_loop_stores_and_counts_divisions_and_calls() -> None:
    mix = analysed(POOL_NAME, POOL)
    assert mix.main is not None and mix.main.loop == sass_mix.Loop(0x10, 0x80)
    assert mix.unit == "iteration"
    assert mix.main.instructions == 8
    assert (mix.main.divisions, mix.main.calls) == (1, 1)
    assert [m.loop for m in mix.inner] == [sass_mix.Loop(0x30, 0x50)]
    assert mix.inner[0].classes == {"global load": 1, "float": 1, "control": 1}
    assert mix.divisions_in_loops == 1


def test_a_gemm_without_tensor_cores_is_counted_per_fma() -> None:
    body = ["LDS R8, [R0]", "FFMA R1, R8, R9, R1", "FFMA R2, R8, R9, R2",
            "FFMA R3, R8, R9, R3", "@P0 BRA 0x0", "STG.E [R2.64], R1", "EXIT"]
    mix = analysed("conv2d_relu_forward_kernel<float, false>", body)
    assert mix.unit == "FMA" and mix.main is not None
    assert (mix.main.instructions, mix.main.fma) == (5, 3)


@pytest.mark.parametrize(("opcode", "expected"), [
    ("LDGSTS.E.BYPASS.128", "global load"), ("LDSM.16.M88.4", "shared load"),
    ("STS.U16", "shared store"), ("HGMMA.64x128x16.F32.BF16", "tensor core"),
    ("IMAD.WIDE.U32", "integer"), ("MUFU.EX2", "float"), ("BAR.SYNC", "barrier"),
    ("BSSY", "control"), ("RED.E.ADD.F32.FTZ.RN", "global store"),
])
def test_classes(opcode: str, expected: str) -> None:
    assert sass_mix.classify(opcode) == expected


def test_every_built_gemm_kernel_has_a_main_loop() -> None:
    """On the CUDA build: each convolution GEMM image has a main loop, with HMMA where its
    template asks for tensor cores (the resource check's rule)."""
    extension = pytest.importorskip("alexnet_kernels._C")
    if not extension.with_cuda:
        pytest.skip("CPU-only build: no CUDA kernels to read")
    import resource_report
    mixes = sass_mix.read(resource_report.library_path(), resource_report.cuda_tool("cuobjdump"))
    gemms = [m for m in mixes if m.gemm]
    assert gemms
    for mix in gemms:
        assert mix.main is not None, mix.name
        wants_tensor_cores = any(t in mix.name for t in ("<__half", "<__nv_bfloat16",
                                                         "<float, true>"))
        assert (mix.unit == "HMMA") == wants_tensor_cores, mix.name
