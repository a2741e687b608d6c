#!/bin/sh
# /init of a Kintsugi lab guest. Channels: ttyS0 is the console (kernel and command output),
# ttyS1 carries only the command's output, ttyS2 carries lab control lines for the host.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TMPDIR=/tmp
# No ld.so.cache in the guest: name the multiarch directories the host's libraries came from.
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /tmp /run /root /var/lib /etc /sys/kernel/debug
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
for tty in /dev/ttyS1 /dev/ttyS2; do stty -F $tty raw -echo 2>/dev/null; done
control() { echo "$*" > /dev/ttyS2; }
control "booted $(cut -d' ' -f1 /proc/uptime)"

while read -r module; do
  [ -n "$module" ] && { insmod "/lib/modules/lab/$module" || control "warning insmod $module failed"; }
done < /lab/modules

ip link set lo up
if ip link set eth0 up 2>/dev/null; then
  ip addr add 10.0.2.15/24 dev eth0
  ip route add default via 10.0.2.2
fi

# A root disk (LabRunSpec.RootDisk) is a whole Debian system: this boot's command and files go into it, and its
# own systemd takes over as PID 1 (its kintsugi-lab.service runs the command and powers off).
if [ -f /lab/systemd ]; then
  mkdir -p /newroot
  mount -t ext4 /dev/vda /newroot || { control "warning cannot mount the root disk /dev/vda"; poweroff -f; }
  mkdir -p /newroot/lab
  cp /lab/command /newroot/lab/command
  [ -d /lab/root ] && cp -a /lab/root/. /newroot/
  control "systemd $(cut -d' ' -f1 /proc/uptime)"
  umount /sys/kernel/debug 2>/dev/null
  umount /tmp /run /sys /proc
  mount --move /dev /newroot/dev
  exec switch_root /newroot /lib/systemd/systemd
fi

# A persistent disk keeps Kintsugi's state, configuration and units across boots.
if [ -b /dev/vda ]; then
  mkdir -p /persist
  if mount -t ext4 /dev/vda /persist; then
    for dir in var/lib/kintsugi etc/kintsugi etc/systemd; do
      mkdir -p "/persist/$dir" "$(dirname "/$dir")"
      ln -s "/persist/$dir" "/$dir"
    done
  else
    control "warning cannot mount /dev/vda"
  fi
fi

# Start enabled services the way systemd would (ExecStart, in the background), for boot-time behaviour.
for unit in /etc/systemd/system/multi-user.target.wants/*.service; do
  [ -e "$unit" ] || continue
  exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
  [ -n "$exec_start" ] || continue
  ( sh -c "$exec_start" > "/run/$(basename "$unit").log" 2>&1; echo $? > "/run/$(basename "$unit").status" ) &
  echo $! >> /run/lab-services
done

control "ready $(cut -d' ' -f1 /proc/uptime)"
cd /root
if [ -f /lab/interactive ]; then
  setsid cttyhack sh -l
  rc=$?
else
  { sh /lab/command; echo $? > /tmp/lab-rc; } 2>&1 | tee /dev/ttyS1
  rc=$(cat /tmp/lab-rc 2>/dev/null || echo 255)
fi
sync
[ -d /persist ] && umount /persist 2>/dev/null
control "exit $rc"
poweroff -f
