"""GPU evidence in one command: what a CPU cannot show, measured on a bare, borrowed GPU machine.

``python -m tdmi.gpukit --json out/gpu.json --md out/gpu.md`` (or ``tdmi-bench gpu``)
runs six independent sections and records each one's status and figures:

1. ``environment``: GPU, compute capability, memory, driver, CUDA runtime, package versions, clocks;
2. ``kernel_correctness``: the shipped TemporalDiff PTX through cuda-python (the plugins' launcher)
   and through cupy, bit for bit against PyTorch, FP32/FP16, T = 2/3/5, (mis)aligned pointers,
   planes that are not a multiple of the vector width, an empty batch, B up to 64 at W48 sizes;
3. ``kernel_bandwidth``: :mod:`tdmi.benchmarks.plugin_bandwidth` rows (kernel vs copy vs the
   unfused ops vs ``torch.compile`` of them) with the goals (>= 90 % of copy, >= 2x unfused);
4. ``torch_latency``: TDMI-W48 384x288 T=3 (random weights) in eager FP32/FP16, channels_last,
   CUDA graphs and ``torch.compile`` (default, max-autotune without CUDA graphs) at batch 1/8/32;
5. ``dcn_forms``: ``torchvision.ops.deform_conv2d`` against the decomposed GridSample form;
6. ``ort_cpu``: ONNX Runtime on this machine's CPU (FP32, batch 1), beside PyTorch CPU.

Made for the machine it runs on: a fixed image (torch, torchvision, numpy, onnx, onnxruntime CPU,
onnxscript, cupy, cuda-python, typer, rich; no TensorRT, OpenCV, matplotlib, pytest), a plain
checkout with ``PYTHONPATH=src``, minutes of lease. So every section runs in its own worker process
(a CUDA fault or a hung compile cannot take the next section with it) under a per-section timeout
and a global time limit (the cheap sections run first, the latency section with its compiles
last), and the JSON / Markdown reports are rewritten after every section; a worker writes its
partial result after every row, so a section stopped by the time guard keeps what it measured.
``--device cpu --quick`` is the dry run CI executes: every section at toy sizes, the GPU-only parts
skipped with their reason. A section is ``ok`` only when the subject its title names ran
(:data:`.runner.SUBJECTS`, judged by :mod:`tdmi.checks`): on a CPU the PTX sections are ``skipped``
although the PyTorch reference ran, and a section that ran part of its rows is ``partial`` with the
counts.

One module per part: :mod:`.options` (the sections, limits and options), :mod:`.record` (the
recorder and the Markdown report), :mod:`.measure` (timing helpers), one module per section,
:mod:`.isolate` (the worker process), :mod:`.runner` (the time-guarded run) and :mod:`.cli`.
Nothing heavy is imported here: ``-h`` answers at once and the image needs nothing pip-installed.
"""
