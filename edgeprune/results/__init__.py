"""The one results model (model.py) and its readers (readers.py): what `run` and `bench` measured,
as typed values; every report is drawn from them (edgeprune.report)."""

from edgeprune.results.model import DeviceCard, Measurement, Ratio, Report, Source, Variant
from edgeprune.results.readers import from_bench_run, from_run_dict, load, load_run_report, result_files, source_labels

__all__ = ["DeviceCard", "Measurement", "Ratio", "Report", "Source", "Variant", "from_bench_run", "from_run_dict",
           "load", "load_run_report", "result_files", "source_labels"]
