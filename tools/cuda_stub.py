"""Writes C source for a link-time stand-in of libcuda (the driver library, which only a machine
with the NVIDIA driver has): one empty function per driver API entry point named in CUDA's headers.
The real libcuda.so.1 provides them at run time.   usage: cuda_stub.py CUDA_ROOT OUT.c"""
import pathlib, re, sys

root, out = pathlib.Path(sys.argv[1]), sys.argv[2]
names = set()
for h in ["cuda.h", "cudaProfiler.h"]:
    p = root / "include" / h
    if not p.exists():
        continue
    text = p.read_text(errors="replace")
    names |= set(re.findall(r"CUresult\s+CUDAAPI\s+(cu\w+)\s*\(", text))
    for a, b in re.findall(r"#define\s+(cu\w+)\s+(cu\w+)\b", text):
        names |= {a, b}
# Profiler control lives in libcuda too; its header (cudaProfiler.h) is not in every wheel.
names |= {"cuProfilerInitialize", "cuProfilerStart", "cuProfilerStop"}
pathlib.Path(out).write_text("".join(f"void {n}(void) {{}}\n" for n in sorted(names)))
print(f"{len(names)} driver entry points")
