//! One socket option both ends set on their UDP socket: IP fragmentation as the kernel's default.
//!
//! `quinn_udp`, which batches the datagram path's system calls, sets `IP_MTU_DISCOVER` to `PROBE`
//! (never fragment) on the sockets it prepares. A datagram at the default size limit fits the usual
//! path MTU and is never fragmented either way; one under a `datagrams.max_body_bytes` raised above
//! the path MTU would then be refused by the sender's kernel, so both ends put back Linux's default
//! for UDP (`WANT`: fragment what exceeds the path MTU), as with a plain socket.

/// Puts back `IP_PMTUDISC_WANT` (or its IPv6 twin) on `socket`; a no-op off Linux.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn allow_fragments(socket: &impl std::os::fd::AsRawFd, ipv4: bool) -> std::io::Result<()> {
    let (level, option) = if ipv4 {
        (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER)
    };
    let want: libc::c_int = libc::IP_PMTUDISC_WANT;
    // SAFETY: a valid socket, an int option, and its size.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (&want as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Puts back the kernel's default fragmentation; a no-op off Linux.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn allow_fragments<S>(_socket: &S, _ipv4: bool) -> std::io::Result<()> {
    Ok(())
}
