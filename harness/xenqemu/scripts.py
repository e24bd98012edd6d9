"""The shell scripts and configuration files that run inside the emulated machine.

Every line that matters to the host starts with a marker, ``@@SNDIF <what> ...`` from dom0
(on the serial console) and ``@@GUEST <what> ...`` from the guest (on its hvc0, which
xenconsoled writes to a file on the 9p ``out`` share; dom0 relays those lines to the
serial console as ``@@SNDIF guest <what> ...`` so the host can time them). The host reads
verdicts from these markers and from files in the ``out`` share, never from QEMU's status.

The images (``dom0_init``, ``guest_init``) do not depend on a run; what does (backend,
paths, how much to play) is in ``dom0-run.sh``, ``guest.cfg`` and ``asound.conf``, which
the host writes into the ``out`` share before each boot.

Every loop is bounded: a machine that hangs must reach ``poweroff -f`` anyway, and the
host kills QEMU on its own timeout in any case.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

GUEST_NAME = "sndguest"
#: the file plugin's output: every frame the backend wrote to ALSA, exactly as written
BACKEND_RAW = "backend.raw"
BACKEND_LOG = "backend.log"
#: the reference backend's trace (every request, response and event it handled), kept in
#: dom0's memory while it runs (as the log is) and copied out with it
BACKEND_TRACE = "backend-trace.jsonl"
CERTIFY_LOG = "certify.log"
#: what a backend in dom0 logs once it watches its XenStore directory (snd_be: "Set
#: watch: <it>", the reference backend: "watching <it>")
WATCH_LOGGED = "/local/domain/0/backend/vsnd"
CONSOLE_DIR = "console"
GUEST_LOG = f"{CONSOLE_DIR}/guest-{GUEST_NAME}.log"

_COMMON = r"""
mark() { echo "@@SNDIF $*"; }
fail() { echo "@@SNDIF FAIL $*"; sync; poweroff -f; sleep 30; }
"""


def dom0_init() -> str:
    """dom0's /init: mounts, Xen drivers, xenstored and the toolstack, the 9p shares,
    xenconsoled, then the run's own script from the ``out`` share, then power off."""
    return "#!/bin/sh\n" + _COMMON + r"""
/bin/busybox --install -s
export PATH=/usr/lib/xen-4.17/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
mkdir -p /run/lock /run/xenstored /run/xen /var/lib/xenstored /var/lib/xen /var/log/xen
mark stage dom0-init
for m in xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd; do
  modprobe $m || fail dom0-init "modprobe $m"
done
mount -t xenfs xenfs /proc/xen || fail dom0-init "mount xenfs"
grep -q control_d /proc/xen/capabilities || fail dom0-init "not the control domain"
xenstored --pid-file /run/xenstored.pid || fail toolstack "xenstored"
xen-init-dom0 || fail toolstack "xen-init-dom0"
xl info >/dev/null || fail toolstack "xl info"
mark stage toolstack
for m in virtio_pci 9pnet_virtio 9p; do modprobe $m || fail 9p "modprobe $m"; done
mkdir -p /out /host
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out /out || fail 9p "mount out"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,ro,cache=loose hostroot /host \
  || fail 9p "mount hostroot"
mkdir -p /out/console
# the guests' kernel: the ELF the host's cache holds when the boot names it (libxl then
# has no XZ to inflate), else the bzImage in this image
k=$(sed -n 's/.*sndif\.guest_kernel=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ -n "$k" ] && [ -r "/host$k" ]; then ln -s "/host$k" /guest/vmlinux
else ln -s vmlinuz /guest/vmlinux; fi
xenconsoled --log=guest --log-dir=/out/console || fail 9p "xenconsoled"
mark stage 9p
[ -f /out/dom0-run.sh ] || fail 9p "no dom0-run.sh in the out share"
sh /out/dom0-run.sh
mark stage dom0-done rc=$?
sync
poweroff -f
sleep 30
"""


#: The start of every guest's /init: busybox, the kernel's filesystems, ``g`` to print a
#: marker (dom0 relays them to the serial log), the first marker.
GUEST_START = r"""#!/bin/sh
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
g() { echo "@@GUEST $*"; }
g init"""


def guest_init(*, rate: int, channels: int, buffer_us: int, period_us: int) -> str:
    """The guest's /init: load the PV sound frontend, wait for its card, play the first
    ``sndif.frames`` of /signal.raw with aplay (S16_LE at ``rate``, ``channels``, the buffer
    and period times given), power off."""
    return GUEST_START + r"""
modprobe snd_xen_front || g fail modprobe
i=0
while ! grep -q vsnd /proc/asound/cards 2>/dev/null; do
  i=$((i+1)); [ $i -gt 600 ] && { g fail no-card; poweroff -f; }
  usleep 100000
done
g card
frames=$(sed -n 's/.*sndif\.frames=\([0-9]*\).*/\1/p' /proc/cmdline)
# sndif.plays=N: the same signal N times, each aplay opening and closing the stream anew
# (the "reopen" scenario); the status reported is the first failure's, else 0
plays=$(sed -n 's/.*sndif\.plays=\([0-9]*\).*/\1/p' /proc/cmdline)
n=0; worst=0
while [ $n -lt ${plays:-1} ]; do
  # -s: aplay knows where the stream ends (from a pipe it would write one more chunk of
  # silence at end of file)
  aplay -D hw:0,0 -t raw -f S16_LE -r @RATE@ -c @CHANNELS@ -B @BUFFER_US@ -F @PERIOD_US@ \
    -s "$frames" /signal.raw
  rc=$?
  n=$((n+1))
  g aplay-run $n rc=$rc
  [ $rc = 0 ] || { worst=$rc; break; }
done
g aplay rc=$worst
if grep -q 'sndif\.capture=1' /proc/cmdline; then
  arecord -D hw:0,0 -t raw -f S16_LE -r @RATE@ -c @CHANNELS@ -B @BUFFER_US@ -F @PERIOD_US@ \
    -s "$frames" >/tmp/rec.raw
  g arecord rc=$?
  # a PV guest has no 9p: what it recorded leaves through its console, base64
  g rec-begin
  uuencode -m /tmp/rec.raw rec.raw
  g rec-end
fi
g done
sync
poweroff -f
""".replace("@RATE@", str(rate)).replace("@CHANNELS@", str(channels)) \
        .replace("@BUFFER_US@", str(buffer_us)).replace("@PERIOD_US@", str(period_us))


def guest_cfg(frames: int, unique_id: str, rate: int,
              capture_id: str | None = None, plays: int = 1, *,
              ramdisk: str = "/guest/initrd.gz", memory: int = 256,
              vsnd: str | None = None, loglevel: int = 4) -> str:
    """xl's configuration of the PV guest: one vsnd card, one playback stream and, with
    ``capture_id``, one capture stream on the same PCM device; the guest plays ``plays``
    times (``ramdisk``: its image as dom0 sees it; ``vsnd``: another card instead;
    ``loglevel``: the kernel's console level, 7 to see a process's segfault)."""
    capture = f", 'stream, unique-id={capture_id}, type=C'" if capture_id else ""
    card = vsnd or (f"[[ 'card, sample-rates={rate}, sample-formats=s16_le', 'pcm, "
                    f"name=dev1', 'stream, unique-id={unique_id}, type=P'{capture} ]]")
    return f"""name = "{GUEST_NAME}"
type = "pv"
kernel = "/guest/vmlinux"
ramdisk = "{ramdisk}"
extra = "console=hvc0 rdinit=/init loglevel={loglevel} sndif.frames={frames} sndif.plays={plays}\
{' sndif.capture=1' if capture_id else ''}"
memory = {memory}
vcpus = 1
on_crash = "destroy"
vsnd = {card}
"""


def asound_conf(raw_path: str, capture_path: str, capture_echo: str) -> str:
    """ALSA's whole configuration for the backend in dom0 (``ALSA_CONFIG_PATH``): PCM
    ``tap`` appends every frame to ``raw_path`` (the file plugin, byte-exact, through a pipe
    to ``cat``: the plugin opens its file anew at each OPEN of the backend's ALSA device,
    truncating it, so a second play would replace the first) and passes it
    on to the loopback card, whose kernel timer paces the stream like real hardware (a
    ``null`` slave has no clock, and snd_be reports the play position from the slave's
    audio timestamp). PCM ``tapc`` captures from the loopback card (silence, clocked) with
    every frame replaced by the next of ``capture_path`` (the file plugin's ``infile``),
    and keeps a copy of what it returned in ``capture_echo``. Subdevice 1: not the
    partner of the playback's subdevice 0."""
    return f"""pcm.tap {{
    type file
    slave.pcm {{ type hw; card "Loopback"; device 0; subdevice 0 }}
    file "|cat >>{raw_path}"
    format "raw"
}}
pcm.tapc {{
    type file
    slave.pcm {{ type hw; card "Loopback"; device 1; subdevice 1 }}
    file "{capture_echo}"
    infile "{capture_path}"
    format "raw"
}}
"""


def dom0_run(*, backend_argv: list[str], out_in_chroot: str, guest_timeout: int,
             backend_env: dict[str, str], ready_wait: float) -> str:
    """The run's script in dom0: the backend in a chroot of the host's root (9p,
    read-only; the out share bound at the same path as on the host, so the backend's
    paths are the host's), then ``xl create``, relaying the guest's markers until it is
    done, then the guest and the backend are stopped."""
    env = " ".join(shlex.quote(f"{k}={v}") for k, v in backend_env.items())
    argv = " ".join(shlex.quote(a) for a in backend_argv)
    out = shlex.quote(out_in_chroot)
    return _COMMON + f"""
export PATH=/usr/lib/xen-4.17/bin:/usr/sbin:/usr/bin:/sbin:/bin
BE=
stop_backend() {{
  [ -n "$BE" ] || return 0
  kill $BE 2>/dev/null
  i=0
  while kill -0 $BE 2>/dev/null && [ $i -lt 20 ]; do usleep 250000; i=$((i+1)); done
  kill -9 $BE 2>/dev/null
  BE=
  cp /run/{BACKEND_LOG} /out/{BACKEND_LOG}
  [ -f /run/{BACKEND_TRACE} ] && cp /run/{BACKEND_TRACE} /out/{BACKEND_TRACE}
}}
# a failure still brings the backend's log out
fail() {{ stop_backend; echo "@@SNDIF FAIL $*"; sync; poweroff -f; sleep 30; }}
modprobe snd-aloop || fail backend-start "modprobe snd-aloop"
for d in proc sys dev run; do
  mount -o bind /$d /host/$d || fail backend-start "bind /$d"
done
mount -o bind /out /host{out} || fail backend-start "bind out"
chroot /host /usr/bin/env -i PATH=/usr/bin:/bin HOME=/tmp {env} {argv} \\
  >/run/{BACKEND_LOG} 2>&1 </dev/null &
BE=$!
# the backend logs to dom0's memory (copied out at the end): a line per 9p write would
# slow it down enough to starve the stream.
# libxl waits 10 s for the backend to reach InitWait: it must be watching first. Both
# backends log the path of the watch they set; one that does not gets {ready_wait} s.
i=0
until grep -q {shlex.quote(WATCH_LOGGED)} /run/{BACKEND_LOG}; do
  kill -0 $BE 2>/dev/null || fail backend-start "the backend exited at start"
  [ $i -ge {int(ready_wait * 4)} ] && break
  usleep 250000
  i=$((i+1))
done
mark stage backend-start
xl -v create -e /out/guest.cfg >/out/xl-create.log 2>&1
rc=$?
if [ $rc != 0 ] && grep -q 'unable to add vsnd devices' /out/xl-create.log; then
  # libxl gives the backend 10 s (emulated) to reach InitWait; about one boot in six
  # snd_be's reset of a new device took longer under emulation: say so, then once more
  # (the backend stays up and meets the new domain afresh)
  echo "@@SNDIF note xl create: the backend was not in InitWait within libxl's 10 s; retried"
  xl destroy {GUEST_NAME} >/dev/null 2>&1
  mv /out/xl-create.log /out/xl-create-1.log
  xl -v create -e /out/guest.cfg >/out/xl-create.log 2>&1
  rc=$?
fi
[ $rc = 0 ] || {{ grep error /out/xl-create.log | head -3; fail xl-create "rc=$rc"; }}
mark stage xl-create
seen=0
relay() {{
  n=$(grep -c '^@@GUEST' /out/{GUEST_LOG} 2>/dev/null)
  n=${{n:-0}}
  if [ "$n" -gt "$seen" ]; then
    grep '^@@GUEST' /out/{GUEST_LOG} | head -n $n | tail -n $((n - seen)) | \
      sed 's/^@@GUEST /@@SNDIF guest /'
    seen=$n
  fi
}}
i=0
while [ $i -lt {guest_timeout * 2} ]; do
  relay
  grep -q '^@@GUEST done' /out/{GUEST_LOG} 2>/dev/null && break
  # xl is a heavy process under TCG: ask it only every few rounds
  [ $((i % 8)) = 7 ] && {{ xl domid {GUEST_NAME} >/dev/null 2>&1 || break; }}
  usleep 500000
  i=$((i+1))
done
# what the guest said between the last relay and the end
relay
# all it has to say is said: its own power-off would only cost seconds more
xl destroy {GUEST_NAME} >/dev/null 2>&1
mark stage guest-gone
stop_backend
mark stage backend-stopped
sync
"""


@dataclass(frozen=True)
class Dom0Step:
    """One harness command for dom0 (``name``: certify, fuzz, shell): its command line,
    the directory it starts in, its environment, its out directory on the host and the
    tag of the stage its start and end are marked with."""
    name: str
    argv: list[str]
    cwd: str
    out_in_chroot: str
    env: dict[str, str]
    stage: str


def dom0_command(step: Dom0Step) -> str:
    """The run's script in dom0 for a harness command on real Xen: the harness itself
    runs in the chroot of the host's root (read-only; dom0's own /tmp and /run bound over
    it, the out share at its host path) as domain 0, playing the frontend of a device
    whose backend it starts in dom0 too (both ends in one domain: the grants, event
    channels and XenStore are Xen's own). Its output goes to ``<name>.log`` in the out
    share; the stages are ``<stage>-start`` and ``<stage>-done``."""
    return dom0_batch([(step, "/out")])


def dom0_batch(steps: list[tuple[Dom0Step, str]]) -> str:
    """:func:`dom0_command` for several commands in turn, each with its out directory
    shared where dom0 mounts it (the second of each pair: ``/out`` for the run's own
    share, else the tag of a share of its own, ``/outN`` for tag ``outN``)."""
    first = steps[0][0].stage
    text = _COMMON + f"""
export PATH=/usr/lib/xen-4.17/bin:/usr/sbin:/usr/bin:/sbin:/bin
for d in proc sys dev run; do
  mount -o bind /$d /host/$d || fail {first}-start "bind /$d"
done
# the host's /tmp stays visible (the checkout or the report may live there): temporary
# files go to dom0's memory instead (TMPDIR)
mkdir -p /run/tmp
"""
    for step, share in steps:
        if share != "/out":
            text += f"""mkdir -p {share}
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 {share[1:]} {share} \
  || fail {step.stage}-start "mount {share[1:]}"
"""
        text += f"""mount -o bind {share} /host{shlex.quote(step.out_in_chroot)} \
  || fail {step.stage}-start "bind out"
"""
    for step, share in steps:
        env_s = " ".join(shlex.quote(f"{k}={v}") for k, v in step.env.items())
        cmd = shlex.quote(f"cd {shlex.quote(step.cwd)} && exec "
                          + " ".join(shlex.quote(a) for a in step.argv))
        log = f"{step.name}.log"
        text += f"""mark stage {step.stage}-start
chroot /host /usr/bin/env -i PATH=/usr/bin:/bin HOME=/run/tmp TMPDIR=/run/tmp {env_s} \
  /bin/sh -c {cmd} \
  >/run/{step.stage}.log 2>&1 </dev/null
rc=$?
cp /run/{step.stage}.log {share}/{log}
mark stage {step.stage}-done rc=$rc
sync
"""
    return text
