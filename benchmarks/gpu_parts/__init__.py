"""The parts of benchmarks/gpu.py, one file each, in the order the check runs them.

record.py holds what every part shares (the sizes, the Recorder that saves a part's rows as they
come, the time-boxed subprocess, a synchronised wall clock). Each part file has
`run(rec, sizes, device)`, which fills its Recorder, and `markdown(part)`, its section of gpu.md:

- environment.py: GPU, driver, CUDA, torch and triton versions;
- tests.py: `pytest -m cuda tests/cuda`, then tests/kernels natively on a GPU;
- kernels.py: every exported kernel vs its eager torch twin vs a copy of the same bytes;
- end_to_end.py: sampling 1,024 sprites: the course's loops, sample_loop, CUDA graphs;
- training.py: `Trainer.train_step` vs the course's eager loop, images/s.

benchmarks/ is a folder of scripts, not a package: gpu.py runs with benchmarks/ first on
sys.path, so these import as `gpu_parts.<name>` (and training.py imports `train_speed`).
"""
