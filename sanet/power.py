"""Board power, clocks, temperatures and throttling, sampled in a thread of their own.

Jetson: ``tegrastats`` lines are parsed per board, taking the board's total input rail where it has
one and summing the right rails where it has none (never both, so nothing is counted twice):

==============  ==================================  ==============================================
board           rails in tegrastats                 total power used here
==============  ==================================  ==============================================
Nano            POM_5V_IN, POM_5V_GPU, POM_5V_CPU   POM_5V_IN (module 5 V input)
TX1/TX2/TX2 NX  VDD_IN, VDD_SYS_* / VDD_CPU_GPU ..  VDD_IN (module input)
Xavier NX       VDD_IN, VDD_CPU_GPU_CV, VDD_SOC     VDD_IN (module input)
Orin NX/Nano    VDD_IN, VDD_CPU_GPU_CV, VDD_SOC     VDD_IN (module input)
AGX Xavier      GPU, CPU, SOC, CV, VDDRQ, SYS5V     sum of all six (no input rail exists)
AGX Orin        VDD_GPU_SOC, VDD_CPU_CV,            VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0
                VIN_SYS_5V0, VDDQ_VDD2_1V8AO        (VDDQ_VDD2_1V8AO read as a sub-rail of the
                                                    5 V system rail: not added, see below)
==============  ==================================  ==============================================

AGX Xavier: the Jetson AGX Xavier Product Design Guide (DG-09840-001, section 5.6.2, figure 5-14)
places the six INA3221 channels on the supply *inputs* of the GPU, CPU, SOC, CV and DDRQ regulators
(fed from SYS_VIN_HV) and on SYS_VIN_MV (the 5 V input, "SYS5V"); section 5.2 says both inputs come
from the main supply, so the six are parallel branches and their sum is the module input.
jetson-stats does the same (github.com/rbonghi/jetson_stats/issues/51, NVIDIA forum thread 81016).
AGX Orin has no input rail either. A public AGX Orin log (github.com/Muxindawang/jetson_dla_tutorial,
README) shows VDD_CPU_CV at 14.3 W while VIN_SYS_5V0 reads 5.0 W, so the core rails are not fed from
the 5 V system rail and those three add up without overlap. VDDQ_VDD2_1V8AO (DRAM VDDQ/VDD2 and the
1.8 V always-on rail) is read as derived from the 5 V system rail by the module's PMIC, so it is kept
as a rail but left out of the total. That is an inference from the rail names, not a statement found
in NVIDIA's public text (jtop sums all four): if the rail is a parallel branch after all, the total
here is low by that rail, 0.3-1.1 W in the logs the tests use.
Module power excludes the carrier board (USB devices, fan, NVMe) on every board.

Desktop GPUs: NVML power (``nvmlDeviceGetPowerUsage``, the board's own reading) and clock event
(throttle) reasons decoded into names. ``pynvml`` (package nvidia-ml-py) is optional.

Sensor windows: a power reading is an average over the time before it (the INA3221 conversion on a Jetson; about 1 s
for NVML on Ampere and newer GPUs, NVIDIA's NVML reference), so the first readings of a span describe what ran before
it. The sampler counts distinct sensor updates (a reading whose total differs from the one before) and treats a
reading as the span's own from the second update on: the sensor's first update may still average time before the
span began, with the window taken to be the interval between updates it observed. A span is settled after
:data:`POWER_SETTLE_UPDATES` updates (three readings of the span's own); the benchmark keeps a visit running until
then. Where a sensor publishes a sliding average more often than its window, the observed interval is shorter than
the window and the first readings still mix in the previous span: the interval is recorded so that can be judged.

Host facts: :func:`jetson_power_facts` runs ``nvpmodel -q`` and ``jetson_clocks --show`` where they exist and keeps
their raw text with what is parsed from it (power mode name and id, fan mode, clock ranges in MHz).

Throttling on Jetson has three signals, each from plain inputs so it can be checked anywhere:
GPU/EMC clocks below their maximum while the GPU is busy (maximum from devfreq ``max_freq`` or
``jetson_clocks --show``), temperatures at or over a passive trip point, and active non-fan
cooling devices in ``/sys/class/thermal``.
"""
import glob
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .errors import SanetError, require

# ----------------------------------------------------------------------------------------------
# tegrastats lines

# "NAME cur/avg" (JetPack 4, mW implied), "NAME 1234mW/1234mW" (JetPack 5/6) or
# "NAME 1234mW/1234mW/1234mW" (JetPack 7: cur/avg/peak). The lookahead refuses "RAM 14700/15692MB"
# and "IRAM 0/252kB", whose numbers run into a unit.
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?![\w/])")
# "GPU@30.5C", "tj@41.468C", JetPack 7 "cpu@52.968C/52.968C"; -256C marks a sensor that is off.
_TEMP = re.compile(r"\b([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C\b")
# "GR3D_FREQ 0%", "GR3D_FREQ 99%@921", "GR3D_FREQ 14%@[407,407]", Thor "GR3D_FREQ @[1000,1000,1000]".
_GR3D = re.compile(r"\bGR3D_FREQ (?:(\d+)%)?(?:@\[?([\d,]+)\]?)?")
_EMC = re.compile(r"\bEMC_FREQ (?:(\d+)%)?(?:@(\d+))?")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_OFF_SENSOR_C = -256.0
_NOT_A_RAIL = {"NC"}  # unconnected INA3221 channels on AGX Orin ("NC 0mW/0mW")

AGX_XAVIER_RAILS = ("GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V")
AGX_ORIN_RAILS = ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0")
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")


@dataclass
class TegraSample:
    """One tegrastats line: total watts (None when the board's rule cannot be applied), every rail
    in watts, the board the rail names identify, the rule that made ``watts``, and clocks/temps."""

    watts: Optional[float]
    rails: Dict[str, float]
    board: str
    rule: str
    temps_c: Dict[str, float] = field(default_factory=dict)
    gpu_load_pct: Optional[int] = None
    gpu_mhz: Optional[int] = None  # highest GPC clock when tegrastats lists one per GPC
    emc_load_pct: Optional[int] = None
    emc_mhz: Optional[int] = None
    cpu_mhz: List[Optional[int]] = field(default_factory=list)  # None for an offline core


def _board_and_total(rails, temps):
    """(board, rule, watts) for rail names -> watts; never adds a rail to the rail that contains it."""
    for name in INPUT_RAILS:
        if name in rails:
            if name == "POM_5V_IN":
                board = "nano"
            elif "VDD_CPU_GPU_CV" in rails:
                # Xavier NX and Orin NX/Nano share rail names; only Orin reports a junction temperature.
                board = "orin_nx_nano" if "tj" in {key.lower() for key in temps} else "xavier_nx"
            elif "VDD_SYS_GPU" in rails or "VDD_SYS_CPU" in rails:
                board = "tx2"
            elif "VDD_CPU_GPU" in rails:
                board = "tx2_nx"
            else:
                board = "jetson"
            return board, "input rail " + name, rails[name]
    if "SYS5V" in rails or "VDDRQ" in rails:
        parts = AGX_XAVIER_RAILS
        board = "agx_xavier"
    elif "VDD_GPU_SOC" in rails or "VIN_SYS_5V0" in rails:
        parts = AGX_ORIN_RAILS
        board = "agx_orin"
    else:
        return ("unknown" if rails else "none"), "no input rail and no known rail set: total not computed", None
    missing = [name for name in parts if name not in rails]
    if missing:
        return board, "rails missing ({}): total not computed".format(", ".join(missing)), None
    return board, "sum of " + " + ".join(parts), sum(rails[name] for name in parts)


def parse_tegrastats_line(line):
    """Parse one tegrastats line into a TegraSample, or None when the line has no tegrastats fields."""
    rails = {}
    for name, current, _average, _peak in _RAIL.findall(line):
        if name not in _NOT_A_RAIL:
            rails[name] = int(current) / 1000.0
    temps = {name: float(value) for name, value in _TEMP.findall(line) if float(value) > _OFF_SENSOR_C}
    gr3d, emc, cpu = _GR3D.search(line), _EMC.search(line), _CPU.search(line)
    if not (rails or temps or gr3d or emc or cpu):
        return None
    board, rule, watts = _board_and_total(rails, temps)
    sample = TegraSample(watts=watts, rails=rails, board=board, rule=rule, temps_c=temps)
    if gr3d:
        sample.gpu_load_pct = int(gr3d.group(1)) if gr3d.group(1) else None
        if gr3d.group(2):
            sample.gpu_mhz = max(int(mhz) for mhz in gr3d.group(2).split(",") if mhz)
    if emc:
        sample.emc_load_pct = int(emc.group(1)) if emc.group(1) else None
        sample.emc_mhz = int(emc.group(2)) if emc.group(2) else None
    if cpu:
        for core in cpu.group(1).split(","):
            clock = core.split("@")[1] if "@" in core else ""
            sample.cpu_mhz.append(int(clock) if clock.isdigit() else None)
    return sample


def parse_tegrastats(text):
    """Every parseable line of a tegrastats log, in order."""
    samples = (parse_tegrastats_line(line) for line in text.splitlines())
    return [sample for sample in samples if sample is not None]


# ----------------------------------------------------------------------------------------------
# Jetson clocks and thermal state (sysfs paths are parameters so tests use a directory tree)

_GPU_DEVFREQ = re.compile(r"gpu|gv11b|gp10b|ga10b|gm20b|gb10b")


def parse_jetson_clocks_show(text):
    """``jetson_clocks --show`` -> {"GPU": {"min_mhz", "max_mhz", "cur_mhz"}, "EMC": ..., "cpu0": ...}.

    Lines look like ``GPU MinFreq=998400000 MaxFreq=998400000 CurrentFreq=998400000`` (Hz) and
    ``cpu0: Online=1 Governor=schedutil MinFreq=115200 MaxFreq=2201600 CurrentFreq=2112000`` (kHz).
    """
    clocks = {}
    for line in text.splitlines():
        match = re.match(r"\s*(\w+):?\s.*?MinFreq=(\d+) MaxFreq=(\d+) CurrentFreq=(\d+)", line)
        if not match:
            continue
        name = match.group(1)
        per_mhz = 1e3 if name.startswith("cpu") else 1e6  # cpufreq reports kHz, devfreq/EMC report Hz
        clocks[name] = {key: int(match.group(index)) / per_mhz
                        for key, index in (("min_mhz", 2), ("max_mhz", 3), ("cur_mhz", 4))}
    return clocks


def read_gpu_max_mhz(sysfs_root="/sys"):
    """The iGPU's devfreq ``max_freq`` in MHz (what nvpmodel/jetson_clocks allow), or None off Jetson."""
    paths = glob.glob(os.path.join(sysfs_root, "devices", "gpu.0", "devfreq", "*", "max_freq"))
    paths += [path for path in glob.glob(os.path.join(sysfs_root, "class", "devfreq", "*", "max_freq"))
              if _GPU_DEVFREQ.search(os.path.basename(os.path.dirname(path)))]
    values = [_read_int(path) for path in paths]
    values = [value for value in values if value]
    return max(values) / 1e6 if values else None


def _read_int(path):
    try:
        with open(path, encoding="ascii") as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def _read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _zone_key(name):
    """'CPU-therm', 'cpu-thermal', 'Tj' and 'tj' all -> 'cpu' / 'tj' so tegrastats names meet sysfs zones."""
    return re.sub(r"[-_]?therm(al)?$", "", name.strip().lower())


def read_thermal_zones(sysfs_root="/sys"):
    """({zone: temperature C}, {zone: lowest passive trip C}) from /sys/class/thermal, keys as ``_zone_key``."""
    temps, trips = {}, {}
    for zone in sorted(glob.glob(os.path.join(sysfs_root, "class", "thermal", "thermal_zone*"))):
        kind = _read_text(os.path.join(zone, "type"))
        if not kind:
            continue
        key = _zone_key(kind)
        millideg = _read_int(os.path.join(zone, "temp"))
        if millideg is not None and millideg / 1000.0 > _OFF_SENSOR_C:
            temps[key] = millideg / 1000.0
        for trip_type in glob.glob(os.path.join(zone, "trip_point_*_type")):
            if _read_text(trip_type) == "passive":
                trip = _read_int(trip_type[: -len("type")] + "temp")
                if trip is not None and trip > 0:
                    trips[key] = min(trips.get(key, trip / 1000.0), trip / 1000.0)
    return temps, trips


def read_active_cooling(sysfs_root="/sys"):
    """Non-fan cooling devices currently engaged (cur_state > 0): the kernel is clamping clocks."""
    engaged = []
    for device in sorted(glob.glob(os.path.join(sysfs_root, "class", "thermal", "cooling_device*"))):
        kind = _read_text(os.path.join(device, "type")) or ""
        if "fan" in kind.lower() or "pwm" in kind.lower():
            continue  # a spinning fan cools; it does not slow the chip down
        state = _read_int(os.path.join(device, "cur_state"))
        if state:
            engaged.append("{} state {}".format(kind, state))
    return engaged


def thermal_throttle_reasons(temps_c, trips_c):
    """Names of zones at or over their passive trip point, e.g. ``thermal:gpu 97.0C >= 96.0C``."""
    reasons = []
    for name, value in sorted(temps_c.items()):
        trip = trips_c.get(_zone_key(name))
        if trip is not None and value >= trip:
            reasons.append("thermal:{} {:.1f}C >= {:.1f}C".format(_zone_key(name), value, trip))
    return reasons


def clock_throttle_reasons(min_busy_gpu_mhz, gpu_max_mhz, min_busy_emc_mhz=None, emc_max_mhz=None, tolerance=0.05):
    """Clocks seen while the GPU was busy that sat more than ``tolerance`` below their maximum.

    Only busy samples count: DVFS lowers clocks on an idle GPU, which is not throttling. With
    ``jetson_clocks`` the clocks are pinned at the maximum, so any drop under load is a limit
    (thermal, power or nvpmodel cap) acting on the run.
    """
    reasons = []
    for name, seen, ceiling in (("gpu", min_busy_gpu_mhz, gpu_max_mhz), ("emc", min_busy_emc_mhz, emc_max_mhz)):
        if seen is not None and ceiling and seen < (1.0 - tolerance) * ceiling:
            reasons.append("clock:{} {:.0f} MHz < max {:.0f} MHz under load".format(name, seen, ceiling))
    return reasons


# ----------------------------------------------------------------------------------------------
# Jetson host facts: L4T release, power mode and clocks as the tools report them

L4T_RELEASE = "/etc/nv_tegra_release"  # in every L4T root file system and L4T container image


def l4t_release():
    """The first line of :data:`L4T_RELEASE` (e.g. ``# R35 (release), REVISION: 4.1, ...``), or None off L4T."""
    text = _read_text(L4T_RELEASE)
    return text.splitlines()[0].strip() if text else None


def parse_nvpmodel_query(text):
    """``nvpmodel -q`` -> {"mode_name", "mode_id", "fan_mode", "errors"}. It prints ``NV Power Mode: MODE_30W_ALL``
    and the mode's id on the next line (JetPack 4.2+ on Xavier also ``NV Fan Mode:quiet``); without root it adds
    ``NVPM ERROR`` lines for the sysfs files it cannot read, after the mode."""
    facts = {"mode_name": None, "mode_id": None, "fan_mode": None, "errors": []}
    lines = [line.strip() for line in text.splitlines()]
    for index, line in enumerate(lines):
        if line.startswith("NV Power Mode:"):
            facts["mode_name"] = line.split(":", 1)[1].strip()
            following = lines[index + 1] if index + 1 < len(lines) else ""
            facts["mode_id"] = int(following) if following.isdigit() else None
        elif line.startswith("NV Fan Mode:"):
            facts["fan_mode"] = line.split(":", 1)[1].strip()
        elif line.startswith("NVPM ERROR"):
            facts["errors"].append(line)
    return facts


def parse_jetson_clocks_report(text):
    """``jetson_clocks --show`` -> {"clocks": :func:`parse_jetson_clocks_show`, "mode_name": its ``NV Power Mode``
    line (JetPack 4.3 and later print one), "clocks_pinned": GPU and EMC minimum at their maximum (what
    ``jetson_clocks`` sets), None without both}."""
    clocks = parse_jetson_clocks_show(text)
    mode = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("NV Power Mode:")), None)
    pinned = None
    if "GPU" in clocks and "EMC" in clocks:
        pinned = all(clocks[name]["min_mhz"] == clocks[name]["max_mhz"] for name in ("GPU", "EMC"))
    return {"clocks": clocks, "mode_name": mode, "clocks_pinned": pinned}


# (tool, arguments, parser): what bench.json records of the power mode and clocks
JETSON_TOOLS = (("nvpmodel", ("-q",), parse_nvpmodel_query), ("jetson_clocks", ("--show",), parse_jetson_clocks_report))


def jetson_power_facts(path=None, timeout_s=30.0):
    """{tool: {"command", "returncode", "raw", parsed fields...}} for each of :data:`JETSON_TOOLS` found on ``path``
    (default: PATH); a tool that is missing gets a ``note`` on L4T (an L4T container has neither: see
    docs/jetson-docker.md) and is left out elsewhere. Output (stdout and stderr) is kept raw beside what is parsed."""
    facts = {}
    for tool, arguments, parse in JETSON_TOOLS:
        executable = shutil.which(tool, path=path)
        if executable is None:
            if l4t_release() is not None:
                facts[tool] = {"note": "{} not found on PATH: mount it from the host (docs/jetson-docker.md)".format(tool)}
            continue
        command = [executable] + list(arguments)
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired) as exc:
            facts[tool] = {"command": " ".join(command), "note": "did not run: {}".format(exc)}
            continue
        facts[tool] = dict(parse(done.stdout), command=" ".join(command), returncode=done.returncode, raw=done.stdout)
    return facts


# ----------------------------------------------------------------------------------------------
# NVML (desktop and data-centre GPUs)

# nvmlClocksEventReason* / nvmlClocksThrottleReason* bits (nvml.h; pynvml 13.x lists the same values)
NVML_CLOCK_EVENT_REASONS = (
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
)
# Reasons that mean power or heat held the clocks down; idle, user-set clocks and sync boost do not.
NVML_THROTTLING = ("sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown")


def decode_clock_event_reasons(mask):
    """NVML reason bitmask -> names in bit order; unknown bits become ``bit_0x...``."""
    names, known = [], 0
    for bit, name in NVML_CLOCK_EVENT_REASONS:
        known |= bit
        if mask & bit:
            names.append(name)
    for shift in range(64):
        bit = 1 << shift
        if mask & bit and not known & bit:
            names.append("bit_{:#x}".format(bit))
    return names


def nvml_throttle_reasons(mask):
    """The subset of decoded reasons that count as throttling (power or thermal limits)."""
    return [name for name in decode_clock_event_reasons(mask) if name in NVML_THROTTLING]


# ----------------------------------------------------------------------------------------------
# Sampler


@dataclass
class PowerSummary:
    """What a PowerSampler saw between start() and stop(). ``available`` is False with a ``note`` when
    no source exists; ``throttled`` is None when nothing could tell (no clocks ceiling, no trips).
    ``mean_watts``/``max_watts`` cover the span's own readings (from the sensor's second update on) when it
    ``settled``, else every reading (with a note); ``update_interval_s`` is the median interval between the
    distinct sensor updates observed."""

    available: bool
    source: Optional[str] = None
    board: Optional[str] = None
    rule: Optional[str] = None
    samples: int = 0
    mean_watts: Optional[float] = None
    max_watts: Optional[float] = None
    updates: int = 0
    update_interval_s: Optional[float] = None
    settled: Optional[bool] = None
    throttled: Optional[bool] = None
    throttle_reasons: List[str] = field(default_factory=list)
    max_temps_c: Dict[str, float] = field(default_factory=dict)
    note: str = ""

    def to_dict(self):
        return asdict(self)


# Distinct sensor updates after which a span's readings are its own (see the module docstring): readings from the
# second update on are clean, so four updates give three clean sensor values.
POWER_SETTLE_UPDATES = 4


class _Aggregate:
    """Running totals so a long run keeps constant memory."""

    def __init__(self):
        self.count = self.power_count = 0
        self.watts_sum, self.watts_max = 0.0, None
        self.last_watts, self.updates, self.update_times = None, 0, []  # distinct sensor updates (the last 64 times)
        self.clean_count, self.clean_sum, self.clean_max = 0, 0.0, None  # readings from the second update on
        self.board = self.rule = None
        self.max_temps, self.reasons = {}, []
        self.min_busy_gpu_mhz = self.min_busy_emc_mhz = None
        self.lock = threading.Lock()

    def add_watts(self, watts, now):
        """One total reading at perf_counter time ``now``; a total that differs from the last is a sensor update."""
        if self.last_watts is not None and watts != self.last_watts:
            self.updates += 1
            self.update_times = (self.update_times + [now])[-64:]
        self.last_watts = watts
        self.power_count += 1
        self.watts_sum += watts
        self.watts_max = watts if self.watts_max is None else max(self.watts_max, watts)
        if self.updates >= 2:
            self.clean_count += 1
            self.clean_sum += watts
            self.clean_max = watts if self.clean_max is None else max(self.clean_max, watts)

    def update_interval_s(self):
        """Median seconds between the distinct sensor updates seen, or None before two."""
        gaps = sorted(b - a for a, b in zip(self.update_times, self.update_times[1:]))
        return gaps[len(gaps) // 2] if gaps else None

    def add_reasons(self, reasons):
        for reason in reasons:
            if reason not in self.reasons:
                self.reasons.append(reason)


def _lowest(current, value):
    return value if current is None else min(current, value)


class PowerSampler:
    """Samples board power in its own thread so no timed call ever waits on it.

    ``source``: "auto" (tegrastats if on PATH, else NVML if pynvml and a driver answer, else none),
    "tegrastats", "nvml" or "none". ``tegrastats`` is the executable to run (a path in tests).
    ``gpu_max_mhz``/``emc_max_mhz``: the clock ceilings for the throttle check on Jetson; the GPU one
    is read from devfreq under ``sysfs_root`` when not given. Use as ``with PowerSampler() as s: ...``
    then read ``s.summary``, or call start() and stop() (which returns the PowerSummary).
    """

    def __init__(self, source="auto", interval_ms=100, tegrastats="tegrastats", gpu_index=0, gpu_max_mhz=None,
                 emc_max_mhz=None, sysfs_root="/sys", busy_gpu_pct=50, stop_timeout_s=5.0):
        if source not in ("auto", "tegrastats", "nvml", "none"):
            raise SanetError("power source must be auto, tegrastats, nvml or none, not {!r}".format(source))
        if interval_ms < 10:
            raise SanetError("power sampling interval must be at least 10 ms, got {}".format(interval_ms))
        self.source_request, self.interval_ms, self.tegrastats = source, int(interval_ms), tegrastats
        self.gpu_index, self.gpu_max_mhz, self.emc_max_mhz = gpu_index, gpu_max_mhz, emc_max_mhz
        self.sysfs_root, self.busy_gpu_pct, self.stop_timeout_s = sysfs_root, busy_gpu_pct, stop_timeout_s
        self.source, self.summary, self.note = None, None, ""
        self._thread, self._process, self._nvml, self._handle, self._gpu_name = None, None, None, None, None
        self._stop_event, self._agg, self._trips = threading.Event(), _Aggregate(), {}

    @property
    def samples_so_far(self):
        """Samples taken since start(); safe to read from another thread while sampling runs."""
        with self._agg.lock:
            return self._agg.count

    def settled(self):
        """Whether the sensor has updated :data:`POWER_SETTLE_UPDATES` times since start(), so the span has readings
        of its own; also True where waiting cannot help: no source, a reader that has ended (tegrastats exited, NVML
        failed), or samples without a total power (a board whose rails give none). Safe to call while sampling runs."""
        if self.source is None:
            return True
        with self._agg.lock:
            agg = self._agg
            if agg.updates >= POWER_SETTLE_UPDATES or (agg.count >= POWER_SETTLE_UPDATES and not agg.power_count):
                return True
        return not self._stop_event.is_set() and self._thread is not None and not self._thread.is_alive()

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        if self._thread is not None:
            raise SanetError("PowerSampler.start() called twice: use one sampler per measured span")
        self.source = self._pick_source()
        self._agg, self.summary = _Aggregate(), None
        self._stop_event.clear()
        if self.source == "tegrastats":
            if self.gpu_max_mhz is None:
                self.gpu_max_mhz = read_gpu_max_mhz(self.sysfs_root)
            self._trips = read_thermal_zones(self.sysfs_root)[1]
            # stdin closed, stderr discarded: tegrastats must never block on a terminal we do not read
            self._process = subprocess.Popen([self.tegrastats, "--interval", str(self.interval_ms)], stdin=subprocess.DEVNULL,
                                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
            self._thread = threading.Thread(target=self._read_tegrastats, args=(self._process.stdout,), name="sanet-tegrastats",
                                            daemon=True)
        elif self.source == "nvml":
            self._thread = threading.Thread(target=self._poll_nvml, name="sanet-nvml", daemon=True)
        else:
            return self
        self._thread.start()
        return self

    def stop(self):
        """Stop sampling (terminate tegrastats, join the thread within ``stop_timeout_s``) -> PowerSummary."""
        if self.summary is not None:
            return self.summary
        self._stop_event.set()
        if self._process is not None:
            self._end_process()
        if self._thread is not None:
            self._thread.join(self.stop_timeout_s)
            if self._thread.is_alive():
                self.note = (self.note + "; " if self.note else "") + "sampler thread did not stop in time"
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # shutting NVML down only fails if the driver went away meanwhile
                pass
            self._nvml = None
        self.summary = self._summarise()
        return self.summary

    def _pick_source(self):
        if self.source_request == "none":
            self.note = "power not measured (source none)"
            return None
        if self.source_request in ("auto", "tegrastats"):
            if shutil.which(self.tegrastats):
                return "tegrastats"
            if self.source_request == "tegrastats":
                raise SanetError("tegrastats not found ({}): run on a Jetson with JetPack, or use power source auto"
                                 .format(self.tegrastats))
        try:
            self._open_nvml()
            return "nvml"
        except SanetError as exc:
            if self.source_request == "nvml":
                raise
            self.note = "no tegrastats and no NVML on this host ({}): power not measured".format(exc)
            if l4t_release() is not None:
                self.note = "tegrastats is not in this L4T container ({} not on PATH): mount the host's (docs/jetson-docker.md); " \
                            "power not measured".format(self.tegrastats)
            return None

    def _open_nvml(self):
        pynvml = require("pynvml", "pip install nvidia-ml-py (NVML power and throttle reasons on NVIDIA GPUs)")
        try:
            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.gpu_index)
            name = pynvml.nvmlDeviceGetName(self._handle)
        except pynvml.NVMLError as exc:
            raise SanetError("NVML unavailable ({}): install the NVIDIA driver or use power source none".format(exc)) from exc
        self._nvml, self._gpu_name = pynvml, name.decode() if isinstance(name, bytes) else name

    def _end_process(self):
        process, self._process = self._process, None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(self.stop_timeout_s)
        elif process.returncode:
            self.note = "tegrastats exited early with status {}".format(process.returncode)

    # -- sampling threads --------------------------------------------------------------------------

    def _read_tegrastats(self, stream):
        try:
            for line in stream:
                sample = parse_tegrastats_line(line)
                if sample is not None:
                    self._add_tegra(sample)
                if self._stop_event.is_set():
                    break
        finally:
            stream.close()

    def _add_tegra(self, sample):
        agg = self._agg
        cooling = read_active_cooling(self.sysfs_root)
        with agg.lock:
            agg.count += 1
            agg.board, agg.rule = sample.board, sample.rule
            if sample.watts is not None:
                agg.add_watts(sample.watts, time.perf_counter())
            for name, value in sample.temps_c.items():
                agg.max_temps[name] = max(value, agg.max_temps.get(name, value))
            busy = sample.gpu_load_pct is not None and sample.gpu_load_pct >= self.busy_gpu_pct
            if busy and sample.gpu_mhz is not None:
                agg.min_busy_gpu_mhz = _lowest(agg.min_busy_gpu_mhz, sample.gpu_mhz)
            if busy and sample.emc_mhz is not None:
                agg.min_busy_emc_mhz = _lowest(agg.min_busy_emc_mhz, sample.emc_mhz)
            agg.add_reasons(thermal_throttle_reasons(sample.temps_c, self._trips))
            agg.add_reasons("cooling:" + device for device in cooling)

    def _poll_nvml(self):
        nvml, handle, agg = self._nvml, self._handle, self._agg
        # ClocksEventReasons is the newer name (driver 535+); older pynvml only has the throttle one
        read_reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        while not self._stop_event.is_set():
            try:
                watts = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0  # mW
                mask = read_reasons(handle)
            except nvml.NVMLError as exc:
                self.note = "NVML read failed: {}".format(exc)
                return
            with agg.lock:
                agg.count += 1
                agg.add_watts(watts, time.perf_counter())
                agg.add_reasons("nvml:" + name for name in nvml_throttle_reasons(mask))
            self._stop_event.wait(self.interval_ms / 1000.0)

    # -- result ------------------------------------------------------------------------------------

    def _summarise(self):
        agg = self._agg
        with agg.lock:
            if self.source is None:
                return PowerSummary(available=False, note=self.note or "power not measured")
            reasons = list(agg.reasons)
            judged = self.source == "nvml" or bool(self._trips)
            if self.source == "tegrastats":
                reasons += clock_throttle_reasons(agg.min_busy_gpu_mhz, self.gpu_max_mhz, agg.min_busy_emc_mhz, self.emc_max_mhz)
                judged = judged or bool(self.gpu_max_mhz or self.emc_max_mhz)
            note = self.note
            if agg.count and not agg.power_count:
                note = (note + "; " if note else "") + "no total power in tegrastats output ({})".format(agg.rule)
            settled = agg.updates >= POWER_SETTLE_UPDATES if agg.power_count else None
            if settled:
                mean, peak = agg.clean_sum / agg.clean_count, agg.clean_max
            else:
                mean, peak = (agg.watts_sum / agg.power_count if agg.power_count else None), agg.watts_max
            if settled is False:
                note = (note + "; " if note else "") + "the sensor updated {} time(s), fewer than {}: the mean may include " \
                    "what ran before this span".format(agg.updates, POWER_SETTLE_UPDATES)
            board = agg.board if self.source == "tegrastats" else self._gpu_name
            return PowerSummary(available=True, source=self.source, board=board, rule=agg.rule if self.source == "tegrastats"
                                else "nvmlDeviceGetPowerUsage", samples=agg.count, mean_watts=mean, max_watts=peak,
                                updates=agg.updates, update_interval_s=agg.update_interval_s(), settled=settled,
                                throttled=bool(reasons) if (judged or reasons) else None, throttle_reasons=reasons,
                                max_temps_c=dict(agg.max_temps), note=note)


def measured_span_power(samples: Sequence[TegraSample]) -> Tuple[Optional[float], Optional[float]]:
    """(mean, max) total watts of parsed tegrastats samples that have a total; (None, None) if none do."""
    watts = [sample.watts for sample in samples if sample.watts is not None]
    return (sum(watts) / len(watts), max(watts)) if watts else (None, None)
