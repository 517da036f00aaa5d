"""Teacher-versus-student cost, as `ganzip profile` reports it."""
from __future__ import annotations

from .errors import GanzipError
from .loading import check_image_model, check_size_value, load_generator
from .metrics.cost import compare, profile_model, set_in_channels
from .student import build_student


def profile(model=None, arch=None, arch_opts=None, trust_pickle=False, width=None, round_to=1,
            size=256, device="auto", latency=True, repeats=10, in_channels=None) -> dict:
    """Cost of a generator, and of its width-scaled student when `width` is given.

    Returns {"teacher": {macs, params, latency_ms}, "student": {...}, "ratios": {...}};
    the student and ratios appear only with `width`. `in_channels` is the image's
    channel count, when the guess from the model's first convolution is wrong.
    """
    check_size_value(size)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise GanzipError(f"--repeats must be at least 1, got {repeats!r}")
    teacher = load_generator(model, arch=arch, arch_opts=arch_opts, trust_pickle=trust_pickle, device="cpu")
    set_in_channels(teacher, in_channels)
    check_image_model(teacher, size, in_channels)
    result = {"size": size, "teacher": profile_model(teacher, size, device, latency=latency, repeats=repeats)}
    if width is not None:
        student = build_student(teacher.cpu(), width, init="inherit", round_to=round_to, size=size,
                                in_channels=in_channels)
        result["student"] = profile_model(student, size, device, latency=latency, repeats=repeats)
        result["unpruned"] = student.ganzip_student["unpruned"]
        t, s = result["teacher"], result["student"]
        ratios = compare(t, s, ("macs", "params", "latency_ms"))
        result["ratios"] = {"macs": ratios["macs"], "params": ratios["params"],
                            "latency": ratios["latency_ms"] if latency else None}
    return result
