# One-command entry points. The image build needs root (mmdebstrap, chroot, binfmt) and a Debian host.
.PHONY: image image-test

# Flashable arm64 SD-card image in build/image/ (see image/README.md)
image:
	image/build.sh

# Build it and boot it: QEMU (-M virt, no network) and systemd-nspawn against a real gateway
image-test:
	scripts/test.sh image
