# -*- test-case-name: tests.unit.test_seccomp -*-
"""The seccomp policy of a container, in liblxc's policy language (version 2).

The policy comes from, in order of precedence:

* `raw.seccomp`: used verbatim;
* `security.syscalls.whitelist`: only the listed syscalls are allowed;
* otherwise a deny list made of LXD's default list
  (`security.syscalls.blacklist_default`, on unless set false), LXD's list of
  compat syscalls (`security.syscalls.blacklist_compat`) and the user's list
  (`security.syscalls.blacklist`).

List keys hold one rule per line, each a syscall name optionally followed by
an action (`kill`, `errno N`, `trap`, `allow`) and argument filters; a bare
name in a deny list kills the process (liblxc's default action for a rule).

liblxc resolves syscall names with libseccomp and skips names it cannot
resolve (liblxc 5.0.2 logs "The syscall[...] is is undefined on host native
arch" at info level). The `compat_sys_*` and `stub_x32_*` names of LXD's compat
list are such names, so that list records intent more than it blocks: liblxc
adds every rule to the native and the compat ABIs alike, and its language has
no way to deny an ABI as a whole.
"""

from lxdtx.config.schema import ConfigError
from lxdtx.config.types import is_true

HEADER = "2\n"

# LXD's default deny list: no forced umount, no kernel module or kexec loading,
# no open_by_handle_at (a container escape on file systems shared with the host).
DEFAULT_POLICY = (
    "reject_force_umount  # comment this to allow umount -f;  not recommended\n"
    "[all]\n"
    "kexec_load errno 38\n"
    "open_by_handle_at errno 38\n"
    "init_module errno 38\n"
    "finit_module errno 38\n"
    "delete_module errno 38\n"
)

COMPAT_SYSCALLS = (
    "compat_sys_rt_sigaction", "stub_x32_rt_sigreturn", "compat_sys_ioctl", "compat_sys_readv",
    "compat_sys_writev", "compat_sys_recvfrom", "compat_sys_sendmsg", "compat_sys_recvmsg",
    "stub_x32_execve", "compat_sys_ptrace", "compat_sys_rt_sigpending",
    "compat_sys_rt_sigtimedwait", "compat_sys_rt_sigqueueinfo", "compat_sys_sigaltstack",
    "compat_sys_timer_create", "compat_sys_mq_notify", "compat_sys_kexec_load",
    "compat_sys_waitid", "compat_sys_set_robust_list", "compat_sys_get_robust_list",
    "compat_sys_vmsplice", "compat_sys_move_pages", "compat_sys_preadv64",
    "compat_sys_pwritev64", "compat_sys_rt_tgsigqueueinfo", "compat_sys_recvmmsg",
    "compat_sys_sendmmsg", "compat_sys_process_vm_readv", "compat_sys_process_vm_writev",
    "compat_sys_setsockopt", "compat_sys_getsockopt", "compat_sys_io_setup",
    "compat_sys_io_submit", "stub_x32_execveat",
)

# Kernel architecture name -> liblxc's section name for it (liblxc calls aarch64 "arm64").
COMPAT_SECTIONS = {"x86_64": "x86_64", "aarch64": "arm64", "ppc64": "ppc64", "ppc64le": "ppc64le"}


def _lines(value):
    """The non-empty lines of a list key, newline-terminated."""
    lines = [line.strip() for line in value.splitlines()]
    return "".join(line + "\n" for line in lines if line)


def _default_on(config):
    value = config.get("security.syscalls.blacklist_default") or ""
    return value == "" or is_true(value)


def needs_policy(config):
    """Whether the container gets a seccomp policy at all."""
    return bool(
        config.get("raw.seccomp")
        or config.get("security.syscalls.whitelist")
        or config.get("security.syscalls.blacklist")
        or is_true(config.get("security.syscalls.blacklist_compat") or "")
        or _default_on(config)
    )


def profile(config, arch):
    """The policy text for the expanded `config` of a container of architecture `arch`, or None.

    `arch` is the kernel's name of the container's architecture (`x86_64`,
    `aarch64`, ...); it names the section of the compat deny list.
    """
    if not needs_policy(config):
        return None
    raw = config.get("raw.seccomp") or ""
    if raw:
        return raw if raw.endswith("\n") else raw + "\n"
    whitelist = config.get("security.syscalls.whitelist") or ""
    if whitelist:
        return HEADER + "whitelist\n[all]\n" + _lines(whitelist)
    policy = HEADER + "blacklist\n"
    if _default_on(config):
        policy += DEFAULT_POLICY
    if is_true(config.get("security.syscalls.blacklist_compat") or ""):
        section = COMPAT_SECTIONS.get(arch)
        if section is None:
            raise ConfigError([(
                "security.syscalls.blacklist_compat",
                "security.syscalls.blacklist_compat isn't supported on this architecture",
            )])
        policy += f"[{section}]\n" + "".join(f"{name} errno 38\n" for name in COMPAT_SYSCALLS)
    blacklist = config.get("security.syscalls.blacklist") or ""
    if blacklist:
        policy += "[all]\n" + _lines(blacklist)
    return policy
