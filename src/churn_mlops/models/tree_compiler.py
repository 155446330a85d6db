"""Compile a LightGBM text model's trees for this machine's CPU, in a process of its own.

    python -m churn_mlops.models.tree_compiler MODEL_TXT OUT [LINKER]

lleaves generates the forest's LLVM IR (`parse_to_ast`, `gen_forest`: raw scores, float64);
llvmlite's new pass manager optimises it at -O3 and LLVM emits the object code, which the system
linker (LINKER, e.g. ld) turns into a shared library where there is one. lleaves 1.3's own
`Model.compile` calls the legacy pass manager, which llvmlite 0.45+ removed, hence this module.
`compiled.py` runs it in a child: the compiler's memory (and lleaves' pandas import) never
enter the scoring process, and a compiler that crashes fails the child only.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

ENTRY = "forest_root"
BLOCK_TREES = 34  # lleaves' default cache block of trees


def llvm_binding() -> Any:
    """llvmlite's LLVM binding, initialised for this machine's target."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    return llvm


def host(llvm: Any) -> tuple[str, str, str]:
    """This machine's target triple, CPU name and CPU features, as LLVM sees them."""
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # LLVM cannot tell on some hosts
        features = ""
    return llvm.get_process_triple(), llvm.get_host_cpu_name(), features


def target_machine(llvm: Any, target: tuple[str, str, str]) -> Any:
    """A target machine for a CPU, with its features, as lleaves makes it (large code model, PIC)."""
    triple, cpu, features = target
    return llvm.Target.from_triple(triple).create_target_machine(
        cpu=cpu, features=features, reloc="pic", codemodel="large"
    )


def object_code(model: Path, target: tuple[str, str, str]) -> bytes:
    """The trees of the model file, compiled to object code for the target."""
    import llvmlite.ir
    from lleaves.compiler.ast import parse_to_ast
    from lleaves.compiler.codegen import gen_forest

    llvm = llvm_binding()
    machine = target_machine(llvm, target)
    forest = parse_to_ast(str(model))
    forest.raw_score = True  # calibration is applied to LightGBM's raw score
    ir = llvmlite.ir.Module(name="forest")
    gen_forest(forest, ir, BLOCK_TREES, ENTRY, True)
    ir.triple = machine.triple
    module = llvm.parse_assembly(str(ir))
    module.data_layout = str(machine.target_data)
    module.verify()
    options = llvm.create_pipeline_tuning_options(speed_level=3)
    options.inlining_threshold = 1  # as lleaves: inline the trees into the forest's loop
    builder = llvm.create_pass_builder(machine, options)
    builder.getModulePassManager().run(module, builder)
    return bytes(machine.emit_object(module))


def main(arguments: list[str]) -> None:
    """Compile MODEL_TXT for this machine into OUT: a shared library when LINKER is given, else an object."""
    model, out, *linker = arguments
    llvm = llvm_binding()
    code = object_code(Path(model), host(llvm))
    if not linker:
        Path(out).write_bytes(code)
        return
    linked = Path(out).with_suffix(".o")
    linked.write_bytes(code)
    subprocess.run([linker[0], "-shared", "-o", out, str(linked)], check=True, capture_output=True)


if __name__ == "__main__":
    main(sys.argv[1:])
