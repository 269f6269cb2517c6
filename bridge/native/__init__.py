"""Native programs on remote buses: an LD_PRELOAD library, its agent, and CUSE devices.

``busbridge run`` puts ``csrc/`` (built by the package's own build into
``libbusbridge_preload.so``) in ``LD_PRELOAD`` and serves its requests from
:mod:`.agent`, so unmodified C, Rust, Node or shell programs that open
``/dev/i2c-N`` and ``/dev/spidevB.C`` talk to the board's buses.
``busbridge mount`` (:mod:`.cuse`) makes the same devices real character
devices where the kernel offers CUSE.  The kernel semantics both rely on are
in :mod:`.i2cdev` and :mod:`.spidev`; docs/native.md has the whole story.
"""
