"""benchmark_model output parser over every known format (fixtures in tests/fixtures/benchmark_model)."""

from pathlib import Path

import pytest

from edgeprune.bench.parse_benchmark_model import BenchmarkOutputError, parse, strip_prefix

FIX = Path(__file__).parent / "fixtures" / "benchmark_model"


def read(name):
    return (FIX / name).read_text()


def test_current_tflite_format_with_info_prefix():
    o = parse(read("tflite_info.txt"))
    assert o.format == "tflite"
    assert o.inference.count == 50
    assert (o.inference.min_us, o.inference.max_us, o.inference.avg_us) == (105416, 106528, 105784)
    assert (o.inference.p5_us, o.inference.median_us, o.inference.p95_us) == (105485, 105718, 106281)
    assert o.inference.std_us == 260
    assert o.median_us == 105718
    assert (o.init_us, o.first_us, o.warmup_avg_us, o.inference_avg_us) == (87639, 106436, 106065, 105784)
    assert o.model_size_mb == pytest.approx(4.2761)
    assert (o.footprint_init_mb, o.footprint_overall_mb) == (pytest.approx(14.4414), pytest.approx(14.8164))
    assert o.peak_memory_mb is None


def test_logcat_prefix_and_scientific_notation():
    o = parse(read("logcat.txt"))
    assert o.init_us == 458883
    assert o.first_us == 2732148
    assert o.warmup_avg_us == pytest.approx(2.73215e6)
    assert o.inference_avg_us == pytest.approx(2.71985e6)
    assert o.inference is None and o.median_us is None  # this line alone has no count line


def test_logcat_prefix_variants_are_stripped():
    assert strip_prefix("07-08 15:34:26.202 I/tflite ( 5395): count=3 curr=5") == "count=3 curr=5"
    assert strip_prefix("07-08 15:34:26.202  5395  5395 I tflite  : INFO: count=3 curr=5") == "count=3 curr=5"
    assert strip_prefix("I/tflite ( 5395): Inference timings in us: x") == "Inference timings in us: x"


def test_legacy_line_and_count_lines_without_percentiles():
    o = parse(read("legacy.txt"))
    assert o.format == "tflite-legacy"
    assert o.inference.count == 50 and o.inference.median_us is None and o.inference.p95_us is None
    assert o.inference.avg_us == pytest.approx(79760.9)
    assert o.warmup.count == 7
    assert (o.warmup_avg_us, o.init_us, o.inference_avg_us) == (83235, 38467, pytest.approx(79760.9))
    assert o.median_us is None  # no median printed: the runner uses the average, and says so


def test_short_count_lines_all_same():
    o = parse(read("all_same.txt"))
    assert o.warmup.count == 5 and o.warmup.all_same and o.warmup.curr_us == 100
    assert o.inference.count == 1 and o.inference.all_same and o.inference.curr_us == 105780
    assert o.median_us == 105780


def test_peak_memory_and_delegate_lines():
    o = parse(read("peak_memory_delegate.txt"))
    assert o.peak_memory_mb == pytest.approx(21.5078)
    assert len(o.delegates) == 1
    d = o.delegates[0]
    assert (d.delegate, d.replaced_nodes, d.total_nodes, d.partitions) == (
        "TfLiteXNNPackDelegate",
        1036,
        1097,
        23,
    )
    assert o.warmup.count == 5 and o.inference.count == 50  # the last count line is the timed phase
    assert o.median_us == 105718


def test_litert_benchmark_format_in_milliseconds():
    o = parse(read("litert.txt"))
    assert o.format == "litert"
    assert o.init_us == pytest.approx(4480)
    assert o.first_us == pytest.approx(710)
    assert o.warmup_avg_us == pytest.approx(520)
    assert o.inference_avg_us == pytest.approx(460)
    assert o.inference.count == 2112
    assert (o.inference.min_us, o.inference.max_us, o.inference.std_us) == (
        pytest.approx(410),
        pytest.approx(1320),
        pytest.approx(50),
    )
    assert (o.footprint_init_mb, o.footprint_overall_mb) == (pytest.approx(9.51), pytest.approx(10.02))


def test_crlf_output_parses_the_same():
    text = read("tflite_info.txt").replace("\n", "\r\n")
    assert parse(text) == parse(read("tflite_info.txt"))


def test_failed_run_raises_with_the_tools_error_lines():
    with pytest.raises(BenchmarkOutputError) as e:
        parse(read("failed.txt"))
    assert "Benchmarking failed" in str(e.value)


def test_empty_output_raises():
    with pytest.raises(BenchmarkOutputError, match="no output"):
        parse("")
