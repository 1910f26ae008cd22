"""The fused temporal-difference CUDA plugin: kernel sources, PTX build, TensorRT registration."""
