#!/bin/busybox sh
# The guest's initramfs. Debian's cloud kernels build the virtio drivers as modules (6.1 even
# virtio and virtio_pci), so the root disk appears only after they are loaded: load them in
# modules.dep order (listed in /modules.order by `cargo xtask guest image`), mount the root disk
# and hand over to the rootfs's systemd.
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {
	echo "nodehealth-guest initramfs: $*"
	# -no-reboot makes QEMU exit instead of hanging at a shell nobody reads.
	poweroff -f
}
for m in $(cat /modules.order); do
	insmod "/lib/modules/$m.ko" || fail "insmod $m failed"
done
i=0
while [ ! -b /dev/vda ]; do
	i=$((i + 1))
	[ "$i" -gt 30 ] && fail "no /dev/vda after 30 s"
	sleep 1
done
mount -t ext4 -o rw /dev/vda /newroot || fail "cannot mount /dev/vda"
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
