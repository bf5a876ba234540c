//! The sandbox's network: a fresh network namespace whose only interface, `lo`, is brought up
//! here (one rtnetlink request), so that programs can use loopback among themselves and reach
//! the egress forwarder; there is no route to anything else, the host's loopback included.

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};

use super::trampoline::SetupError;

/// `RTM_NEWLINK`.
const RTM_NEWLINK: u16 = 16;
/// `NLMSG_ERROR`: the acknowledgement.
const NLMSG_ERROR: u16 = 2;
/// `NLM_F_REQUEST | NLM_F_ACK`.
const FLAGS: u16 = 1 | 4;
/// `IFF_UP`.
const IFF_UP: u32 = 1;
/// The loopback device's index in every network namespace (`LOOPBACK_IFINDEX`).
const LOOPBACK_INDEX: i32 = 1;

/// Brings `lo` up in this process's network namespace.
pub(super) fn loopback_up() -> Result<(), SetupError> {
    let fail = |e| SetupError::new("bringing lo up", e);
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(fail)?;
    let mut msg = Vec::with_capacity(32);
    msg.extend_from_slice(&32u32.to_ne_bytes()); // nlmsg_len
    msg.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
    msg.extend_from_slice(&FLAGS.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    msg.extend_from_slice(&[0, 0]); // ifi_family AF_UNSPEC, pad
    msg.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
    msg.extend_from_slice(&LOOPBACK_INDEX.to_ne_bytes());
    msg.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_flags
    msg.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_change
    sendto(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &msg,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .map_err(fail)?;
    let mut ack = [0u8; 64];
    let n = recv(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &mut ack,
        MsgFlags::empty(),
    )
    .map_err(fail)?;
    let kind = ack.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let errno = ack
        .get(16..20)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    match (n >= 20, kind, errno) {
        (true, Some(NLMSG_ERROR), Some(0)) => Ok(()),
        (true, Some(NLMSG_ERROR), Some(e)) => Err(fail(nix::errno::Errno::from_raw(-e))),
        _ => Err(fail(nix::errno::Errno::EPROTO)),
    }
}
