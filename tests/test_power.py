"""sanet.power: tegrastats parsing per Jetson board on real public log lines, throttle checks on plain
values and a directory-tree sysfs, NVML reason decoding, the PowerSampler thread driven by a real
subprocess (a script that prints real tegrastats lines) rather than a mock, how long a bench visit waits for the
sensor, and the nvpmodel/jetson_clocks host facts from scripts that print recorded real outputs."""
import os
import stat
import sys
import time
import types

import numpy as np
import pytest

from sanet import engines, power
from sanet.errors import SanetError
from sanet.power import (
    POWER_SETTLE_UPDATES,
    PowerSampler,
    clock_throttle_reasons,
    decode_clock_event_reasons,
    measured_span_power,
    nvml_throttle_reasons,
    parse_jetson_clocks_report,
    parse_jetson_clocks_show,
    parse_nvpmodel_query,
    parse_tegrastats,
    parse_tegrastats_line,
    read_active_cooling,
    read_gpu_max_mhz,
    read_thermal_zones,
    thermal_throttle_reasons,
)

# --- real tegrastats lines (each from the public source named above it) -----------------------

# AGX Xavier, JetPack 4.2: https://github.com/martinkersner/gtop/pull/7 (comment of 2019-06-17)
AGX_XAVIER = (
    "RAM 14700/15692MB (lfb 3x2MB) SWAP 898/8192MB (cached 23MB) CPU [0%@1190,0%@1190,0%@1190,0%@1190,0%@1190,0%@1190,"
    "0%@1190,0%@1190] EMC_FREQ 0% GR3D_FREQ 0% AO@30C GPU@30.5C Tboard@31C Tdiode@32C AUX@30.5C CPU@31.5C thermal@30.8C "
    "PMIC@100C GPU 463/463 CPU 618/618 SOC 2936/2936 CV 0/0 VDDRQ 309/309 SYS5V 3306/3306"
)
# Xavier NX, 15 W mode under load:
# https://github.com/Frederik-AiBlox/ai-blox.github.io/blob/282c34200b92b0e840614c56c715dc73cf55652f/pages/module-x/hardware/stress-test.md
XAVIER_NX = (
    "RAM 1749/7772MB (lfb 377x4MB) SWAP 0/3886MB (cached 0MB) CPU [100%@1420,100%@1420,100%@1420,100%@1420,100%@1420,"
    "100%@1420] EMC_FREQ 0% GR3D_FREQ 99% AO@51C GPU@53.5C PMIC@100C AUX@51C CPU@53C thermal@52.2C "
    "VDD_IN 14664/13950 VDD_CPU_GPU_CV 10874/10241 VDD_SOC 1442/1412"
)
# Orin NX 8 GB (7620 MB, has NVDLA0), JetPack 6: https://github.com/rbonghi/jetson_stats/issues/624
ORIN_NX = (
    "05-15-2025 18:30:28 RAM 6982/7620MB (lfb 5x1MB) SWAP 2640/16384MB (cached 202MB) CPU [97%@1984,95%@1984,95%@1984,"
    "91%@1984,88%@1984,93%@247] EMC_FREQ 18%@3199 GR3D_FREQ 84%@[713] NVENC 1%@115 NVDEC 40%@115 NVJPG off NVJPG1 off "
    "VIC 31%@115 OFA off NVDLA0 off PVA0_FREQ off APE 174 cv0@63.031C cpu@65.562C soc2@64.156C soc0@63.031C cv1@62.937C "
    "gpu@63.5C tj@65.562C soc1@64.718C cv2@60.875C VDD_IN 17946mW/15710mW VDD_CPU_GPU_CV 8896mW/7585mW VDD_SOC 3923mW/3515mW"
)
# AGX Orin dev kit, JetPack 7.2 (cur/avg/peak triples, "C/C" temperatures), recorded as real in
# https://github.com/rbonghi/jetson_stats/blob/f41d5cadfeafc3516ff8cb7ddd5712cfa9a78611/jtop/tests/test_06_tegra_parse.py
AGX_ORIN_JP7 = (
    "07-25-2026 09:08:28 RAM 20642/62817MB (lfb 1x2MB) "
    "CPU [23%@2201,10%@2201,4%@2201,14%@2201,30%@2201,18%@2201,10%@2201,10%@2201,33%@2201,7%@2201,5%@2201,27%@2201] "
    "EMC_FREQ 3%@3199 GR3D_FREQ 12%@[1300,1300] NVENC0 off NVDEC0 off NVJPG0 off NVJPG1 off VIC off OFA off "
    "NVDLA0 off NVDLA1 off PVA0_FREQ off APE 174 "
    "cpu@52.968C/52.968C soc2@48.406C/48.406C soc0@49.531C/49.531C gpu@47.625C/47.625C "
    "VDD_GPU_SOC 5139mW/5139mW/5139mW VDD_CPU_CV 3268mW/3268mW/3268mW VIN_SYS_5V0 5500mW/5500mW/5500mW"
)
# AGX Orin 64 GB under a DLA + CPU load (two GPCs, "@[407,407]"):
# https://github.com/Muxindawang/jetson_dla_tutorial/blob/574948838ec56e186984187c899ebe46c714625c/README.md
AGX_ORIN_DLA = (
    "11-21-2025 08:49:48 RAM 13983/62780MB (lfb 424x4MB) SWAP 126/31390MB (cached 0MB) CPU [90%@2201,100%@2201,100%@2201,"
    "100%@2201,100%@2201,100%@2201,100%@2201,100%@2201,100%@2201,100%@2201,100%@2201,100%@2201] EMC_FREQ 1%@2133 "
    "GR3D_FREQ 14%@[407,407] VIC_FREQ 115 NVDLA0_FREQ @1600 APE 174 CV0@73.625C CPU@77.281C Tboard@62C SOC2@70C "
    "Tdiode@62.25C SOC0@69.531C CV1@72.5C GPU@69.125C tj@77.281C SOC1@68.968C CV2@67.25C VDD_GPU_SOC 3150mW/2971mW "
    "VDD_CPU_CV 14312mW/12415mW VIN_SYS_5V0 4968mW/5048mW VDDQ_VDD2_1V8AO 1091mW/1091mW"
)
# AGX Orin, JetPack 5 (dated 01-03-2023) as recorded in jetson_stats' tegrastats emulator:
# https://github.com/rbonghi/jetson_stats/blob/f41d5cadfeafc3516ff8cb7ddd5712cfa9a78611/tests/tegrastats (line 86).
# Kept for its "NC" channels and -256C (off) sensors; the emulator randomises the CPU/GPU loads ($RANDOM), fixed
# to 0 here, while rails, temperatures and clocks are as recorded.
AGX_ORIN_JP5 = (
    "01-03-2023 16:07:54 RAM 2257/30536MB (lfb 5392x4MB) SWAP 0/15268MB (cached 0MB) CPU [0%@729,0%@729,0%@729,0%@729,"
    "0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729] EMC_FREQ 0%@204 GR3D_FREQ 0%@0 GR3D2_FREQ 0%@0 NVJPG1 729 "
    "VIC_FREQ 115 APE 233 CV0@-256C CPU@41.437C Tboard@29C SOC2@39.062C Tdiode@30.75C SOC0@39.031C CV1@-256C GPU@-256C "
    "tj@41.656C SOC1@38.937C CV2@-256C VDD_GPU_SOC 2390mW/2390mW VDD_CPU_CV 796mW/796mW VIN_SYS_5V0 3522mW/3522mW "
    "NC 0mW/0mW VDDQ_VDD2_1V8AO 301mW/301mW NC 0mW/0mW"
)
# Jetson Nano running detectnet: https://github.com/dusty-nv/jetson-inference/issues/1206 (comment of 2021-09-01)
NANO_LINES = (
    "RAM 1501/3956MB (lfb 332x4MB) IRAM 0/252kB(lfb 252kB) CPU [16%@1479,13%@1479,10%@1479,4%@1479] "
    "EMC_FREQ 4%@1600 GR3D_FREQ 28%@76 NVDEC 716 VIC_FREQ 0%@140 APE 25 "
    "PLL@39C CPU@44C PMIC@100C GPU@41.5C AO@47.5C thermal@42.5C POM_5V_IN 4122/3107 POM_5V_GPU 109/85 POM_5V_CPU 1167/748",
    "RAM 1504/3956MB (lfb 331x4MB) IRAM 0/252kB(lfb 252kB) CPU [44%@1479,22%@1479,26%@1479,14%@1479] "
    "EMC_FREQ 7%@1600 GR3D_FREQ 86%@921 NVDEC 716 VIC_FREQ 0%@140 APE 25 "
    "PLL@39C CPU@44C PMIC@100C GPU@42.5C AO@47.5C thermal@42.5C POM_5V_IN 4531/3285 POM_5V_GPU 1113/213 POM_5V_CPU 539/722",
    "RAM 1504/3956MB (lfb 331x4MB) IRAM 0/252kB(lfb 252kB) CPU [19%@1479,27%@1479,23%@1479,19%@1479] "
    "EMC_FREQ 9%@1600 GR3D_FREQ 99%@921 NVDEC 716 VIC_FREQ 0%@140 APE 25 "
    "PLL@39.5C CPU@43.5C PMIC@100C GPU@43C AO@48C thermal@43C POM_5V_IN 4523/3422 POM_5V_GPU 1113/313 POM_5V_CPU 538/701",
    "RAM 1504/3956MB (lfb 331x4MB) IRAM 0/252kB(lfb 252kB) CPU [29%@1479,36%@1479,18%@1479,11%@1479] "
    "EMC_FREQ 10%@1600 GR3D_FREQ 99%@921 NVDEC 716 VIC_FREQ 0%@140 APE 25 "
    "PLL@39.5C CPU@43.5C PMIC@100C GPU@43C AO@48C thermal@43.25C POM_5V_IN 4531/3533 POM_5V_GPU 1256/407 POM_5V_CPU 466/678",
)
NANO_LOG = "\n".join(NANO_LINES) + "\n"
NANO_WATTS = (4.122, 4.531, 4.523, 4.531)
# TX2 (rail names of the TX2 dev kit: VDD_SYS_* on 0x40/0x41, see energymon/energymon jetson/JetsonPowerRails.md),
# reported in https://github.com/henrygd/beszel/issues/476 and kept in
# https://github.com/henrygd/beszel/blob/04600d83cc01b1c009f4f8dccb60d4c7754a7bde/agent/gpu_test.go
TX2 = (
    "RAM 3276/7859MB (lfb 5x4MB) SWAP 1626/12122MB (cached 181MB) CPU [44%@1421,49%@2031,67%@2034,17%@1420,25%@1419,8%@1420] "
    "EMC_FREQ 1%@1866 GR3D_FREQ 0%@114 APE 150 MTS fg 1% bg 1% PLL@42.5C MCPU@42.5C PMIC@50C Tboard@38C GPU@39.5C BCPU@42.5C "
    "thermal@41.3C Tdiode@39.25C VDD_SYS_GPU 182/182 VDD_SYS_SOC 730/730 VDD_4V0_WIFI 0/0 VDD_IN 5297/5297 VDD_SYS_CPU 1917/1917 "
    "VDD_SYS_DDR 1241/1241"
)
# TX1 on L4T 28.1 (pre-JetPack-4 format, no rails), with its jetson_clocks --show:
# https://github.com/hordiales/jetson-tx1-dev/blob/a5a5cc70a6f40a0452cb59814fde50ae28cd12cd/SCRIPTS.md
TX1_L4T28 = "RAM 3607/3983MB (lfb 47x4MB) SWAP 873/8192MB (cached 281MB) cpu [17%,11%,65%,0%]@1734 EMC 1%@1600 APE 25 GR3D 39%@76"
TX1_JETSON_CLOCKS = """\
SOC family:tegra210  Machine:jetson_tx1
Online CPUs: 0-3
CPU Cluster Switching: Disabled
cpu0: Gonvernor=interactive MinFreq=1734000 MaxFreq=1734000 CurrentFreq=1734000
cpu1: Gonvernor=interactive MinFreq=1734000 MaxFreq=1734000 CurrentFreq=1734000
cpu2: Gonvernor=interactive MinFreq=1734000 MaxFreq=1734000 CurrentFreq=1734000
cpu3: Gonvernor=interactive MinFreq=1734000 MaxFreq=1734000 CurrentFreq=1734000
GPU MinFreq=998400000 MaxFreq=998400000 CurrentFreq=998400000
EMC MinFreq=12750000 MaxFreq=1600000000 CurrentFreq=1600000000 FreqOverride=1
Fan: speed=255
"""
# AGX Orin jetson_clocks --show (first CPU line): https://github.com/rbonghi/jetson_stats/issues/381
AGX_ORIN_CLOCKS_CPU = "cpu0: Online=1 Governor=schedutil MinFreq=115200 MaxFreq=2201600 CurrentFreq=2112000 IdleStates: WFI=1 c7=1 "


# --- parsers -----------------------------------------------------------------------------------


def test_agx_xavier_total_is_the_sum_of_its_six_parallel_rails():
    sample = parse_tegrastats_line(AGX_XAVIER)
    assert sample.board == "agx_xavier"
    assert sample.watts == pytest.approx(0.463 + 0.618 + 2.936 + 0.0 + 0.309 + 3.306)
    assert sample.rails["SYS5V"] == pytest.approx(3.306) and len(sample.rails) == 6
    # the "GPU" rail and the "GPU@30.5C" sensor share a name and must not mix
    assert sample.rails["GPU"] == pytest.approx(0.463) and sample.temps_c["GPU"] == 30.5
    assert sample.gpu_load_pct == 0 and sample.gpu_mhz is None and sample.emc_mhz is None
    assert sample.cpu_mhz == [1190] * 8


def test_agx_xavier_with_a_rail_missing_reports_no_total():
    sample = parse_tegrastats_line(AGX_XAVIER.replace(" SYS5V 3306/3306", ""))
    assert sample.board == "agx_xavier" and sample.watts is None and "SYS5V" in sample.rule


def test_xavier_nx_takes_vdd_in_and_does_not_add_its_sub_rails():
    sample = parse_tegrastats_line(XAVIER_NX)
    assert sample.board == "xavier_nx" and sample.rule == "input rail VDD_IN"
    assert sample.watts == pytest.approx(14.664)
    assert sum(sample.rails.values()) > 26.0  # what a naive sum of every rail would have reported
    assert sample.gpu_load_pct == 99 and sample.cpu_mhz == [1420] * 6


def test_orin_nx_takes_vdd_in_and_reads_the_per_gpc_clock_array():
    sample = parse_tegrastats_line(ORIN_NX)
    assert sample.board == "orin_nx_nano" and sample.watts == pytest.approx(17.946)
    assert (sample.gpu_load_pct, sample.gpu_mhz, sample.emc_load_pct, sample.emc_mhz) == (84, 713, 18, 3199)
    assert sample.temps_c["tj"] == pytest.approx(65.562) and sample.cpu_mhz[-1] == 247


def test_agx_orin_jetpack7_triples_sum_the_three_module_rails():
    sample = parse_tegrastats_line(AGX_ORIN_JP7)
    assert sample.board == "agx_orin"
    assert sample.watts == pytest.approx(5.139 + 3.268 + 5.5)
    assert sample.gpu_mhz == 1300 and sample.emc_mhz == 3199
    assert sample.temps_c == {"cpu": 52.968, "soc2": 48.406, "soc0": 49.531, "gpu": 47.625}


def test_agx_orin_leaves_out_the_dram_sub_rail():
    sample = parse_tegrastats_line(AGX_ORIN_DLA)
    assert sample.board == "agx_orin" and "VDDQ_VDD2_1V8AO" not in sample.rule
    assert sample.watts == pytest.approx(3.150 + 14.312 + 4.968)
    assert sample.rails["VDDQ_VDD2_1V8AO"] == pytest.approx(1.091)
    assert (sample.gpu_load_pct, sample.gpu_mhz, sample.emc_mhz) == (14, 407, 2133)
    assert sample.temps_c["tj"] == pytest.approx(77.281) and sample.cpu_mhz == [2201] * 12


def test_agx_orin_skips_unconnected_channels_and_dead_sensors():
    sample = parse_tegrastats_line(AGX_ORIN_JP5)
    assert sample.watts == pytest.approx(2.390 + 0.796 + 3.522) and "NC" not in sample.rails
    assert "GPU" not in sample.temps_c and "CV0" not in sample.temps_c  # -256C: sensor off
    assert sample.temps_c["tj"] == pytest.approx(41.656)


def test_nano_takes_pom_5v_in_and_ignores_iram():
    samples = parse_tegrastats(NANO_LOG)
    assert [s.watts for s in samples] == pytest.approx(list(NANO_WATTS))
    assert {s.board for s in samples} == {"nano"}
    assert set(samples[0].rails) == {"POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"}
    assert [(s.gpu_load_pct, s.gpu_mhz) for s in samples] == [(28, 76), (86, 921), (99, 921), (99, 921)]
    assert measured_span_power(samples) == (pytest.approx(sum(NANO_WATTS) / 4), pytest.approx(4.531))


def test_tx2_takes_vdd_in_not_the_sum_of_seven_rails():
    sample = parse_tegrastats_line(TX2)
    assert sample.board == "tx2" and sample.watts == pytest.approx(5.297)
    assert sum(sample.rails.values()) == pytest.approx(9.367)


def test_pre_jetpack4_format_and_empty_lines_are_not_samples():
    assert parse_tegrastats_line(TX1_L4T28) is None
    assert parse_tegrastats_line("") is None
    assert measured_span_power([]) == (None, None)


def test_jetson_clocks_show_gives_ceilings_in_mhz():
    clocks = parse_jetson_clocks_show(TX1_JETSON_CLOCKS + AGX_ORIN_CLOCKS_CPU)
    assert clocks["GPU"] == {"min_mhz": 998.4, "max_mhz": 998.4, "cur_mhz": 998.4}
    assert clocks["EMC"]["max_mhz"] == 1600.0 and clocks["EMC"]["min_mhz"] == 12.75
    assert clocks["cpu0"] == {"min_mhz": 115.2, "max_mhz": 2201.6, "cur_mhz": 2112.0}  # the AGX Orin line wins
    assert clocks["cpu3"]["max_mhz"] == 1734.0


# --- throttling --------------------------------------------------------------------------------


def test_clock_throttle_needs_a_busy_clock_below_the_ceiling():
    assert clock_throttle_reasons(921, 921.6) == []  # Nano at its 921.6 MHz ceiling
    assert clock_throttle_reasons(713, 765.0) == ["clock:gpu 713 MHz < max 765 MHz under load"]
    assert clock_throttle_reasons(None, 765.0, 1600, 2133.0) == ["clock:emc 1600 MHz < max 2133 MHz under load"]
    assert clock_throttle_reasons(713, None) == []  # no ceiling known: nothing to judge


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _fake_sysfs(root, gpu_trip_mdeg=96000, cooling_state=0):
    """A /sys tree laid out as on a Jetson: thermal zones with trip points, cooling devices, GPU devfreq."""
    zone = root / "class" / "thermal" / "thermal_zone1"
    _write(zone / "type", "GPU-therm\n")
    _write(zone / "temp", "43000\n")
    _write(zone / "trip_point_0_type", "critical\n")
    _write(zone / "trip_point_0_temp", "105000\n")
    _write(zone / "trip_point_1_type", "passive\n")
    _write(zone / "trip_point_1_temp", "{}\n".format(gpu_trip_mdeg))
    _write(root / "class" / "thermal" / "thermal_zone2" / "type", "CV0-therm\n")
    _write(root / "class" / "thermal" / "thermal_zone2" / "temp", "-256000\n")
    _write(root / "class" / "thermal" / "cooling_device0" / "type", "pwm-fan\n")
    _write(root / "class" / "thermal" / "cooling_device0" / "cur_state", "3\n")
    _write(root / "class" / "thermal" / "cooling_device1" / "type", "gpu-balanced\n")
    _write(root / "class" / "thermal" / "cooling_device1" / "cur_state", "{}\n".format(cooling_state))
    _write(root / "devices" / "gpu.0" / "devfreq" / "57000000.gpu" / "max_freq", "921600000\n")
    _write(root / "class" / "devfreq" / "7000c000.mmc" / "max_freq", "200000000\n")  # not the GPU


def test_sysfs_thermal_zones_trips_and_cooling(tmp_path):
    _fake_sysfs(tmp_path, gpu_trip_mdeg=42000, cooling_state=1)
    temps, trips = read_thermal_zones(str(tmp_path))
    assert temps == {"gpu": 43.0} and trips == {"gpu": 42.0}  # off sensor dropped, critical trip ignored
    assert read_active_cooling(str(tmp_path)) == ["gpu-balanced state 1"]  # the fan does not count
    assert read_gpu_max_mhz(str(tmp_path)) == pytest.approx(921.6)
    nano_temps = parse_tegrastats(NANO_LOG)[2].temps_c
    assert thermal_throttle_reasons(nano_temps, trips) == ["thermal:gpu 43.0C >= 42.0C"]
    assert thermal_throttle_reasons(nano_temps, {"gpu": 96.0}) == []


def test_sysfs_readers_on_a_host_without_jetson_files(tmp_path):
    assert read_thermal_zones(str(tmp_path)) == ({}, {})
    assert read_active_cooling(str(tmp_path)) == [] and read_gpu_max_mhz(str(tmp_path)) is None


def test_nvml_reason_bits_decode_to_names():
    assert decode_clock_event_reasons(0) == []
    assert decode_clock_event_reasons(0x1) == ["gpu_idle"] and nvml_throttle_reasons(0x1) == []
    assert decode_clock_event_reasons(0x24) == ["sw_power_cap", "sw_thermal_slowdown"]
    assert nvml_throttle_reasons(0x24 | 0x2 | 0x10) == ["sw_power_cap", "sw_thermal_slowdown"]
    assert nvml_throttle_reasons(0x8 | 0x40 | 0x80) == ["hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"]
    assert decode_clock_event_reasons(0x200 | 0x100) == ["display_clock_setting", "bit_0x200"]


def test_nvml_bits_match_pynvml_when_installed():
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py not installed")
    assert decode_clock_event_reasons(pynvml.nvmlClocksThrottleReasonSwThermalSlowdown) == ["sw_thermal_slowdown"]
    assert decode_clock_event_reasons(pynvml.nvmlClocksThrottleReasonHwPowerBrakeSlowdown) == ["hw_power_brake_slowdown"]


# --- the sampler thread with a real subprocess -----------------------------------------------

_FAKE_TEGRASTATS = """#!{python}
import os, signal, sys, time
{ignore_term}
args = sys.argv[1:]
interval = int(args[args.index("--interval") + 1]) / 1000.0
with open({record!r}, "w") as handle:
    handle.write("{{}} {{}}".format(os.getpid(), " ".join(args)))
for line in {first!r}:
    print(line, flush=True)
    time.sleep(interval)
lines = {lines!r}
index = 0
while True:
    print(lines[index % len(lines)], flush=True)
    index += 1
    time.sleep(interval)
"""


def _fake_tegrastats(tmp_path, lines, ignore_term=False, first=()):
    """An executable that behaves like ``tegrastats --interval N``: prints the ``first`` lines once, then the given
    real lines forever."""
    script, record = tmp_path / "tegrastats", tmp_path / "tegrastats.args"
    script.write_text(_FAKE_TEGRASTATS.format(python=sys.executable, record=str(record), lines=list(lines), first=list(first),
                                              ignore_term="signal.signal(signal.SIGTERM, signal.SIG_IGN)" if ignore_term else ""))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), record


def _wait_for(sampler, count, limit_s=60.0):
    """Block until the sampler has ``count`` samples (a generous ceiling, not a timing assertion)."""
    deadline = time.monotonic() + limit_s
    while sampler.samples_so_far < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sampler.samples_so_far >= count


def _assert_gone(pid):
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_sampler_reads_a_real_tegrastats_subprocess_and_stops_it(tmp_path):
    executable, record = _fake_tegrastats(tmp_path, NANO_LINES)
    _fake_sysfs(tmp_path)
    sampler = PowerSampler(source="auto", interval_ms=20, tegrastats=executable, sysfs_root=str(tmp_path))
    with sampler:
        _wait_for(sampler, 6)
    summary = sampler.summary
    pid, args = record.read_text().split(" ", 1)
    assert args == "--interval 20"
    _assert_gone(int(pid))
    assert not sampler._thread.is_alive()
    assert summary.available and summary.source == "tegrastats" and summary.board == "nano"
    assert summary.rule == "input rail POM_5V_IN" and summary.samples >= 6
    assert min(NANO_WATTS) <= summary.mean_watts <= max(NANO_WATTS) and summary.max_watts == pytest.approx(4.531)
    # the GPU ceiling came from devfreq (921.6 MHz); busy samples ran at 921: not throttled
    assert sampler.gpu_max_mhz == pytest.approx(921.6)
    assert summary.throttled is False and summary.throttle_reasons == []
    assert summary.max_temps_c["GPU"] == 43.0 and summary.to_dict()["samples"] == summary.samples
    assert sampler.stop() is summary  # stop() twice returns the same summary


def test_sampler_flags_clock_thermal_and_cooling_throttling(tmp_path):
    executable, _record = _fake_tegrastats(tmp_path, NANO_LINES)
    _fake_sysfs(tmp_path, gpu_trip_mdeg=42000, cooling_state=2)
    sampler = PowerSampler(interval_ms=20, tegrastats=executable, gpu_max_mhz=998.4, sysfs_root=str(tmp_path))
    sampler.start()
    _wait_for(sampler, 4)
    summary = sampler.stop()
    assert summary.throttled is True
    assert "cooling:gpu-balanced state 2" in summary.throttle_reasons
    assert any(reason.startswith("thermal:gpu ") for reason in summary.throttle_reasons)
    assert "clock:gpu 921 MHz < max 998 MHz under load" in summary.throttle_reasons


def test_sampler_kills_a_tegrastats_that_ignores_sigterm(tmp_path):
    executable, record = _fake_tegrastats(tmp_path, [AGX_XAVIER], ignore_term=True)
    sampler = PowerSampler(interval_ms=20, tegrastats=executable, sysfs_root=str(tmp_path), stop_timeout_s=1.0)
    sampler.start()
    _wait_for(sampler, 2)
    summary = sampler.stop()
    _assert_gone(int(record.read_text().split(" ", 1)[0]))
    assert summary.board == "agx_xavier" and summary.mean_watts == pytest.approx(7.632)
    assert summary.throttled is None  # no trips, no clock ceiling: nothing could tell


def test_sampler_without_any_source_says_unavailable(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # this host as one without nvidia-ml-py
    with PowerSampler(tegrastats=str(tmp_path / "no-tegrastats")) as sampler:
        pass
    summary = sampler.summary
    assert summary.available is False and summary.samples == 0 and summary.mean_watts is None
    assert "no tegrastats and no NVML" in summary.note and "nvidia-ml-py" in summary.note
    assert PowerSampler(source="none").start().stop().available is False


def test_sampler_names_the_fix_when_a_requested_source_is_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(SanetError, match="tegrastats not found"):
        PowerSampler(source="tegrastats", tegrastats=str(tmp_path / "no-tegrastats")).start()
    with pytest.raises(SanetError, match="nvidia-ml-py"):
        PowerSampler(source="nvml").start()
    with pytest.raises(SanetError, match="auto, tegrastats, nvml or none"):
        PowerSampler(source="rapl")


class _NvmlError(Exception):
    pass


def _driver_like_pynvml(power_mw, reasons, calls):
    """A stand-in for the pynvml *library* (not for the sampler under test): answers like a driver would,
    one power reading and one reason mask per call, and records what the sampler asked for."""
    module = types.ModuleType("pynvml")
    readings = iter(zip(power_mw, reasons))
    last = {}

    def read_power(handle):
        last["power"], last["mask"] = next(readings, (power_mw[-1], reasons[-1]))
        return last["power"]

    module.NVMLError = _NvmlError
    module.nvmlInit = lambda: calls.append("init")
    module.nvmlShutdown = lambda: calls.append("shutdown")
    module.nvmlDeviceGetHandleByIndex = lambda index: calls.append("handle {}".format(index)) or "gpu-handle"
    module.nvmlDeviceGetName = lambda handle: b"NVIDIA H100 80GB HBM3"
    module.nvmlDeviceGetPowerUsage = read_power
    module.nvmlDeviceGetCurrentClocksEventReasons = lambda handle: last["mask"]
    return module


def test_nvml_polling_thread_converts_mw_and_collects_throttle_reasons(tmp_path, monkeypatch):
    calls = []
    power_mw, masks = [250000, 350000, 300000], [0x1, 0x4 | 0x10, 0x1]
    monkeypatch.setitem(sys.modules, "pynvml", _driver_like_pynvml(power_mw, masks, calls))
    sampler = PowerSampler(interval_ms=10, tegrastats=str(tmp_path / "no-tegrastats"), gpu_index=1)
    with sampler:
        _wait_for(sampler, 3)
    summary = sampler.summary
    assert calls[:2] == ["init", "handle 1"] and calls[-1] == "shutdown"
    assert summary.source == "nvml" and summary.board == "NVIDIA H100 80GB HBM3"
    assert summary.max_watts == pytest.approx(350.0) and 250.0 < summary.mean_watts < 350.0
    assert summary.throttled is True and summary.throttle_reasons == ["nvml:sw_power_cap"]


# --- how long a span waits for the sensor, and which readings are its own ---------------------


def _wait_settled(sampler, limit_s=60.0):
    deadline = time.monotonic() + limit_s
    while not sampler.settled() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_span_readings_start_at_the_sensors_second_update(tmp_path):
    """The first reading and the first update may average time before the span (here: two other boards' lines at 14.7
    and 17.9 W); from the second update on the readings are the span's own (the Nano's 4.1-4.5 W)."""
    executable, _ = _fake_tegrastats(tmp_path, NANO_LINES, first=[XAVIER_NX, ORIN_NX])
    sampler = PowerSampler(interval_ms=20, tegrastats=executable, sysfs_root=str(tmp_path))
    with sampler:
        assert not sampler.settled()
        _wait_settled(sampler)
    summary = sampler.summary
    assert summary.settled is True and sampler.settled() and summary.updates >= POWER_SETTLE_UPDATES
    assert min(NANO_WATTS) <= summary.mean_watts <= max(NANO_WATTS) and summary.max_watts == pytest.approx(4.531)
    assert summary.update_interval_s > 0 and "fewer than" not in summary.note


def test_a_sensor_that_never_updates_never_settles(tmp_path):
    executable, _ = _fake_tegrastats(tmp_path, [AGX_XAVIER])  # the same reading every time
    sampler = PowerSampler(interval_ms=20, tegrastats=executable, sysfs_root=str(tmp_path))
    with sampler:
        _wait_for(sampler, 6)
        assert not sampler.settled()
    summary = sampler.summary
    assert summary.settled is False and summary.updates == 0 and summary.update_interval_s is None
    assert summary.mean_watts == pytest.approx(7.632) and "updated 0 time(s), fewer than 4" in summary.note
    assert PowerSampler(source="none").settled()  # nothing sampled: nothing to wait for


def test_waiting_ends_when_nothing_more_can_come(tmp_path):
    """A tegrastats that exits (e.g. it cannot read the rails in a container) or a board whose lines carry no total
    leaves nothing to wait for: settled() says so, and the summary says the readings did not settle."""
    script = tmp_path / "tegrastats"
    script.write_text("#!{}\nprint({!r}, flush=True)\n".format(sys.executable, NANO_LINES[0]))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    sampler = PowerSampler(interval_ms=20, tegrastats=str(script), sysfs_root=str(tmp_path))
    with sampler:
        sampler._thread.join(60)  # the reader ends with the process's output
        assert sampler.settled()
    assert sampler.summary.settled is False and sampler.summary.samples == 1
    no_total = AGX_XAVIER.replace(" SYS5V 3306/3306", "")  # AGX Xavier without one of its six rails: no total
    executable, _ = _fake_tegrastats(tmp_path, [no_total])
    with PowerSampler(interval_ms=20, tegrastats=executable, sysfs_root=str(tmp_path)) as sampler:
        _wait_for(sampler, POWER_SETTLE_UPDATES)
        assert sampler.settled()
    assert sampler.summary.settled is None and sampler.summary.mean_watts is None


def test_a_bench_visit_lasts_until_the_sensor_settled(exported, tmp_path):
    """One timed iteration is all the CPU cap allows, but with a sampler the visit goes on until the sensor updated
    POWER_SETTLE_UPDATES times; a sensor that never updates ends the visit at power_max_seconds, unsettled."""
    from sanet import bench
    from sanet.runners import OrtRunner

    _, paths = exported
    frame = np.zeros((1, 96, 192, 3), np.uint8)
    config = bench.BenchConfig(warmup_seconds=0, iterations=1, rounds=1, cpu_max_seconds=1e-6, power_max_seconds=60)
    changing, _ = _fake_tegrastats(tmp_path, NANO_LINES)
    steady_dir = tmp_path / "steady"
    steady_dir.mkdir()
    steady, _ = _fake_tegrastats(steady_dir, [AGX_XAVIER])
    with OrtRunner(paths[(96, 192)]) as runner:
        samples, _, summary = bench.time_visit(runner, frame, config, PowerSampler(interval_ms=20, tegrastats=changing,
                                                                                      sysfs_root=str(tmp_path)))
        assert len(samples) >= 1 and summary.settled is True and summary.updates >= POWER_SETTLE_UPDATES
        config.power_max_seconds = 0.3
        samples, _, summary = bench.time_visit(runner, frame, config, PowerSampler(interval_ms=20, tegrastats=steady,
                                                                                      sysfs_root=str(tmp_path)))
        assert len(samples) >= 1 and summary.settled is False


def test_bench_rows_carry_settled_power_from_tegrastats_on_path(exported, synth_small, tmp_path, monkeypatch):
    """run_bench with a tegrastats on PATH (a script printing real Nano lines): every visit waits for the sensor, and
    the row gets the Nano's watts, FPS/W and the observed update interval."""
    from sanet import bench
    from sanet.data import open_dataset

    model, _ = exported
    _fake_tegrastats(tmp_path, NANO_LINES)
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + os.environ["PATH"])
    config = bench.BenchConfig(resolutions=[(64, 128)], backends=("pytorch",), precisions=("fp32",), warmup_seconds=0,
                               iterations=2, rounds=2, parity_images=1, out=str(tmp_path / "o"))  # no export to wait for
    rows, skipped = bench.run_bench(model, config, open_dataset(str(synth_small), "cityscapes", "val"), report=lambda _: None)
    assert [r.runner for r in rows] == ["pytorch-cpu-fp32"] and not [s for s in skipped if s.startswith("power")]
    row = rows[0]
    assert row.power_settled is True and min(NANO_WATTS) <= row.power_w <= max(NANO_WATTS)
    assert row.fps_per_watt == pytest.approx(row.fps / row.power_w) and row.power_update_s > 0


# --- power mode and clocks: nvpmodel -q and jetson_clocks --show ------------------------------

# Jetson Nano, nvpmodel -q without sudo (the mode, then errors for what only root reads):
# https://github.com/NVIDIA-AI-IOT/jetbot/issues/49
NVPMODEL_NANO_USER = """NV Power Mode: 5W
1
NVPM ERROR: Error opening /sys/kernel/nvpmodel_emc_cap/emc_iso_cap: 13
NVPM ERROR: failed to read PARAM EMC: ARG MAX_FREQ: PATH /sys/kernel/nvpmodel_emc_cap/emc_iso_cap
"""
# AGX Xavier, sudo nvpmodel -q as quoted in https://github.com/open-rdc/orne-box/issues/16 (mode line, no id quoted)
NVPMODEL_XAVIER = "NV Fan Mode:quiet\nNV Power Mode: MAXN\n"
# Jetson AGX Thor, nvpmodel -q: https://github.com/anduril/jetpack-nixos/pull/460
NVPMODEL_THOR = "NV Power Mode: MAXN\n0\n"
# /etc/nv_tegra_release of L4T r35.4.1 (JetPack 5.1.2), as `cat` printed it in TIER IV's Anvil (AGX Orin) setup notes
# for github.com/tier4/data_recording_system ("Confirm that BSP version is r35.4.1")
NV_TEGRA_RELEASE = "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n"


def test_nvpmodel_query_gives_mode_name_id_and_errors():
    assert parse_nvpmodel_query(NVPMODEL_NANO_USER) == {
        "mode_name": "5W", "mode_id": 1, "fan_mode": None,
        "errors": ["NVPM ERROR: Error opening /sys/kernel/nvpmodel_emc_cap/emc_iso_cap: 13",
                   "NVPM ERROR: failed to read PARAM EMC: ARG MAX_FREQ: PATH /sys/kernel/nvpmodel_emc_cap/emc_iso_cap"]}
    assert parse_nvpmodel_query(NVPMODEL_XAVIER) == {"mode_name": "MAXN", "mode_id": None, "fan_mode": "quiet", "errors": []}
    assert parse_nvpmodel_query(NVPMODEL_THOR)["mode_id"] == 0
    assert parse_nvpmodel_query("") == {"mode_name": None, "mode_id": None, "fan_mode": None, "errors": []}


def test_jetson_clocks_report_says_whether_clocks_are_pinned():
    report = parse_jetson_clocks_report(TX1_JETSON_CLOCKS)
    assert report["clocks"]["GPU"]["max_mhz"] == 998.4 and report["mode_name"] is None
    assert report["clocks_pinned"] is False  # GPU pinned at 998.4 MHz, but EMC may still drop to 12.75 MHz
    pinned = TX1_JETSON_CLOCKS.replace("EMC MinFreq=12750000", "EMC MinFreq=1600000000")
    assert parse_jetson_clocks_report(pinned + "NV Power Mode: MAXN\n") == dict(
        parse_jetson_clocks_report(pinned), mode_name="MAXN", clocks_pinned=True)
    assert parse_jetson_clocks_report("Please run as root\n")["clocks_pinned"] is None


def _tool(folder, name, output, argument):
    """An executable ``name`` that prints recorded ``output`` when called with ``argument``, else fails."""
    script = folder / name
    script.write_text("#!{}\nimport sys\nif sys.argv[1:] != [{!r}]:\n    sys.exit('usage')\nsys.stdout.write({!r})\n".format(
        sys.executable, argument, output))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_jetson_power_facts_keep_raw_text_and_parsed_fields(tmp_path, monkeypatch):
    from sanet.benchreport import host_facts

    _tool(tmp_path, "nvpmodel", NVPMODEL_NANO_USER, "-q")
    _tool(tmp_path, "jetson_clocks", TX1_JETSON_CLOCKS, "--show")
    facts = power.jetson_power_facts(path=str(tmp_path))
    assert facts["nvpmodel"]["raw"] == NVPMODEL_NANO_USER and facts["nvpmodel"]["returncode"] == 0
    assert (facts["nvpmodel"]["mode_name"], facts["nvpmodel"]["mode_id"]) == ("5W", 1)
    assert facts["nvpmodel"]["command"].endswith("nvpmodel -q")
    assert facts["jetson_clocks"]["raw"] == TX1_JETSON_CLOCKS and facts["jetson_clocks"]["clocks"]["EMC"]["max_mhz"] == 1600.0
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + os.environ["PATH"])
    assert host_facts()["jetson_power"]["nvpmodel"]["mode_name"] == "5W"  # what bench.json records


def test_missing_jetson_tools_are_named_on_l4t_only(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert power.jetson_power_facts(path=str(tmp_path)) == {}  # not L4T (no release file): nothing to say
    (tmp_path / "nv_tegra_release").write_text(NV_TEGRA_RELEASE)
    monkeypatch.setattr(power, "L4T_RELEASE", str(tmp_path / "nv_tegra_release"))
    assert power.l4t_release() == NV_TEGRA_RELEASE.strip()
    assert engines.l4t_release() == "R35.4.1"  # an engine sidecar's L4T, parsed from the same read
    facts = power.jetson_power_facts(path=str(tmp_path))
    assert set(facts) == {"nvpmodel", "jetson_clocks"} and "docs/jetson-docker.md" in facts["nvpmodel"]["note"]
    with PowerSampler(tegrastats=str(tmp_path / "tegrastats")) as sampler:
        pass
    assert "tegrastats is not in this L4T container" in sampler.summary.note and "docs/jetson-docker.md" in sampler.summary.note
