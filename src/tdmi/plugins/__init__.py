"""The fused temporal-difference CUDA plugin: kernel sources, PTX build, TensorRT registration.

Modules (import what you need; none of them imports TensorRT or CUDA at import time):

* ``temporal_diff``: the contract (``SPEC``), the ONNX node helpers and the numpy reference;
* ``launch_params``: block/grid/vector-width/scalar-argument arithmetic shared by every launcher;
* ``build``: nvcc -> PTX (``python -m tdmi.plugins.build``), PTX selection per GPU, PTX parsing;
* ``trt_plugin``: ``register_plugins()`` for TensorRT >= 10.9 (AOT quickly deployable plugin);
* ``launch``: ``run_temporal_diff()``, the shipped PTX on torch CUDA tensors via cuda-python;
* ``availability``: is nvcc / a CUDA GPU / TensorRT here, and if not, why;
* ``machine``: what machine a figure was measured on (the one environment probe).
"""
