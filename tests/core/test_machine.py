import subprocess
import sys

import onnxruntime

from detflow.core.machine import machine_info

CPUINFO = """\
processor\t: 0
model name\t: Example CPU @ 2.0GHz
flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni amx_tile amx_int8
processor\t: 1
model name\t: Other
flags\t\t: fpu sse2
"""


def test_instruction_sets_come_from_the_first_processors_flags(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    info = machine_info(path)
    assert info["cpu"] == "Example CPU @ 2.0GHz"
    assert info["instruction_sets"] == [
        "AVX2",
        "FMA",
        "AVX-512F",
        "AVX-512 VNNI",
        "AMX",
        "AMX-INT8",
    ]
    path.write_text(CPUINFO.replace("avx512f avx512_vnni amx_tile amx_int8", ""))
    assert machine_info(path)["instruction_sets"] == ["AVX2", "FMA"]


def test_no_cpuinfo_gives_none_not_an_error(tmp_path):
    info = machine_info(tmp_path / "missing")
    assert info["instruction_sets"] is None and info["cores"] >= 1


def test_versions_are_the_installed_packages_without_importing_torch():
    assert machine_info()["packages"]["onnxruntime"] == onnxruntime.__version__
    code = (
        "import sys; from detflow.core.machine import machine_info; v = machine_info()"
        "['packages']; assert v['torch'] and 'torch' not in sys.modules, v"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
