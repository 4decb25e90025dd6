//! The veth pair, created and removed over rtnetlink.
//!
//! The calls run on a current-thread tokio runtime that is dropped before returning, so
//! the calling process (which libcontainer forks afterwards) has no extra thread.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::{Handle, LinkUnspec, LinkVeth};

use crate::pool::AddressLease;
use crate::{Names, NetError};

fn with_handle<T>(
    action: &str,
    work: impl AsyncFnOnce(Handle) -> Result<T, rtnetlink::Error>,
) -> Result<T, NetError> {
    let failed = |message: String| NetError::Netlink {
        action: action.to_string(),
        message,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| failed(e.to_string()))?;
    runtime.block_on(async {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| failed(e.to_string()))?;
        let task = tokio::spawn(connection);
        let result = work(handle).await.map_err(|e| failed(e.to_string()));
        task.abort();
        result
    })
}

async fn index_of(handle: &Handle, name: &str) -> Result<Option<u32>, rtnetlink::Error> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_enodev() => Ok(None),
        Err(err) => Err(err),
    }
}

const fn libc_enodev() -> i32 {
    19
}

/// Creates the pair: the host end up with the host address, the sandbox end with the
/// sandbox address (libcontainer moves it, with its address, into the sandbox).
pub fn create_veth(names: &Names, lease: &AddressLease) -> Result<(), NetError> {
    let (host, peer) = (names.host.clone(), names.peer.clone());
    let (host_ip, sandbox_ip, prefix) = (lease.host, lease.sandbox, lease.prefix);
    with_handle(&format!("create veth {host}"), async move |handle| {
        handle
            .link()
            .add(LinkVeth::new(&host, &peer).build())
            .execute()
            .await?;
        let add_address = async |name: &str, ip: Ipv4Addr| -> Result<u32, rtnetlink::Error> {
            let index = index_of(&handle, name)
                .await?
                .ok_or(rtnetlink::Error::RequestFailed)?;
            handle
                .address()
                .add(index, IpAddr::V4(ip), prefix)
                .execute()
                .await?;
            Ok(index)
        };
        let host_index = add_address(&host, host_ip).await?;
        add_address(&peer, sandbox_ip).await?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(host_index).up().build())
            .execute()
            .await
    })
}

/// Deletes the links that exist of `names`, over one netlink connection (deleting one end
/// of a veth pair deletes both).
pub fn delete(names: &[&str]) -> Result<(), NetError> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    with_handle(
        &format!("delete links {}", names.join(", ")),
        async move |handle| {
            for name in &names {
                if let Some(index) = index_of(&handle, name).await? {
                    handle.link().del(index).execute().await?;
                }
            }
            Ok(())
        },
    )
}
