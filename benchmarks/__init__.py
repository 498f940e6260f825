"""Benchmarks of the project's hot paths, each runnable as ``python -m benchmarks.<name>`` from the
repository root or as ``python benchmarks/<name>.py`` (they import only the installed ``avatar``
package): ``benchmark_renderer`` (the mesh renderer on the full Anny body, ``make benchmark``)
and ``benchmark_neus`` (the NeuS samplers). Measured numbers: docs/experiments/performance.md."""
