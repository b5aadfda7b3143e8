"""Cross-checks of ctde against the authors' released PyTorch code (benchmarks/against_authors.py).

Each system module (`backbones`, `cadp`, `ptde`, `igm_da`, `ctds`) lists its components. A component computes
its outputs twice from the same inputs and the same parameter values:

    ours(golden)                    ctde's own code path (JAX only: tests/test_golden.py runs it in `make test`)
    authors(checkout, golden)       the authors' modules and learners, run with our parameters copied in
                                    (PyTorch; imported inside the function, only the benchmark needs it)

`common` holds what every system shares: the recorded SMAX episodes, the pymarl batch layout, the parameter
mappings (dense layers, GRU cells) and the golden files.
"""
