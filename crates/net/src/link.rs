//! The veth pair, created and removed over rtnetlink.
//!
//! The calls run on a current-thread tokio runtime that is dropped before returning, so
//! the calling process keeps no extra thread.

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth};

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

/// Creates the pair with the sandbox end made directly inside the sandbox's network
/// namespace (that of process `sandbox_init`) as `eth0`, and brings the host end up with
/// the host address. The sandbox's init gives `eth0` its address when it starts.
///
/// Creating the end in place, rather than moving it in later, saves the namespace move,
/// the slowest step of a network set-up (about 20 ms here).
pub fn create_veth(
    names: &Names,
    lease: &AddressLease,
    sandbox_init: u32,
    inside_name: &str,
) -> Result<(), NetError> {
    let host = names.host.clone();
    let (host_ip, prefix) = (lease.host, lease.prefix);
    let peer = LinkUnspec::new_with_name(inside_name)
        .setns_by_pid(sandbox_init)
        .build();
    with_handle(&format!("create veth {host}"), async move |handle| {
        handle
            .link()
            .add(
                LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                    .name(host.clone())
                    .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                    .build(),
            )
            .execute()
            .await?;
        let index = index_of(&handle, &host)
            .await?
            .ok_or(rtnetlink::Error::RequestFailed)?;
        handle
            .address()
            .add(index, IpAddr::V4(host_ip), prefix)
            .execute()
            .await?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
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
