//! Thin rtnetlink helpers: each is one netlink request (or dump) and returns
//! plain data, so the plugin logic in `plugin.rs` reads as the steps of
//! `ip link` / `ip addr` / `ip route` it replaces.
//!
//! A netlink socket talks to the namespace of the thread that created it:
//! [`with_netlink`] creates the socket on the calling thread, so call it on
//! the main thread for the node namespace and inside
//! [`crate::sys::run_in_netns`] for a pod namespace.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope,
};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::PluginError;

/// errno of "no such device" as netlink reports it (negated).
const ENODEV: i32 = nix::errno::Errno::ENODEV as i32;

/// Runs `f` with a netlink handle, on a current-thread runtime built on the
/// calling thread (so the socket lives in this thread's namespace).
pub fn with_netlink<T, F, Fut>(f: F) -> Result<T, PluginError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, PluginError>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|source| PluginError::Io {
            what: "tokio runtime",
            source,
        })?;
    runtime.block_on(async move {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| PluginError::Io {
                what: "netlink socket",
                source,
            })?;
        let driver = tokio::spawn(connection);
        let out = f(handle).await;
        driver.abort();
        out
    })
}

/// What the plugin needs to know about a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    pub mac: Option<String>,
    pub up: bool,
    pub mtu: Option<u32>,
}

impl LinkState {
    fn from_message(msg: &LinkMessage) -> LinkState {
        let mut state = LinkState {
            index: msg.header.index,
            name: String::new(),
            mac: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            mtu: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => state.name = name.clone(),
                LinkAttribute::Address(bytes) if bytes.len() == 6 => {
                    state.mac = Some(
                        bytes
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect::<Vec<_>>()
                            .join(":"),
                    );
                }
                LinkAttribute::Mtu(mtu) => state.mtu = Some(*mtu),
                _ => {}
            }
        }
        state
    }
}

/// An IPv4 route as the plugin compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteState {
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub scope: RouteScope,
    pub table: u32,
}

impl RouteState {
    fn from_message(msg: &RouteMessage) -> RouteState {
        let mut state = RouteState {
            dst: Ipv4Addr::UNSPECIFIED,
            prefix_len: msg.header.destination_prefix_length,
            gateway: None,
            oif: None,
            scope: msg.header.scope,
            table: u32::from(msg.header.table),
        };
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => state.dst = *ip,
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => state.gateway = Some(*ip),
                RouteAttribute::Oif(index) => state.oif = Some(*index),
                RouteAttribute::Table(table) => state.table = *table,
                _ => {}
            }
        }
        state
    }
}

/// The main routing table's id.
pub const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

fn is_enodev(err: &rtnetlink::Error) -> bool {
    matches!(err, rtnetlink::Error::NetlinkError(msg) if msg.raw_code() == -ENODEV)
}

/// The link named `name`, or `None` if there is none.
pub async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<LinkState>, PluginError> {
    match handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await
    {
        Ok(msg) => Ok(msg.as_ref().map(LinkState::from_message)),
        Err(e) if is_enodev(&e) => Ok(None),
        Err(e) => Err(PluginError::netlink(format!("get link {name}"))(e)),
    }
}

/// Deletes the link named `name`; `Ok(false)` if it did not exist.
/// Deleting one end of a veth pair deletes the other end too, wherever it is.
pub async fn delete_link(handle: &Handle, name: &str) -> Result<bool, PluginError> {
    let Some(link) = link_by_name(handle, name).await? else {
        return Ok(false);
    };
    match handle.link().del(link.index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if is_enodev(&e) => Ok(false),
        Err(e) => Err(PluginError::netlink(format!("delete link {name}"))(e)),
    }
}

/// Creates a veth pair `host` <-> `peer` in the current namespace.
pub async fn create_veth(
    handle: &Handle,
    host: &str,
    peer: &str,
    mtu: u32,
) -> Result<(), PluginError> {
    handle
        .link()
        .add(LinkVeth::new(host, peer).mtu(mtu).build())
        .execute()
        .await
        .map_err(PluginError::netlink(format!("create veth {host}/{peer}")))
}

/// Moves link `index` into the network namespace open as `netns_fd`.
pub async fn move_to_netns(
    handle: &Handle,
    index: u32,
    netns_fd: RawFd,
) -> Result<(), PluginError> {
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .setns_by_fd(netns_fd)
                .build(),
        )
        .execute()
        .await
        .map_err(PluginError::netlink(format!(
            "move link {index} into pod netns"
        )))
}

/// Renames link `index` (must be down) and sets its MTU.
pub async fn rename(handle: &Handle, index: u32, name: &str, mtu: u32) -> Result<(), PluginError> {
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .name(name.to_owned())
                .mtu(mtu)
                .build(),
        )
        .execute()
        .await
        .map_err(PluginError::netlink(format!(
            "rename link {index} to {name}"
        )))
}

/// Sets link `index` administratively up.
pub async fn set_up(handle: &Handle, index: u32) -> Result<(), PluginError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(PluginError::netlink(format!("set link {index} up")))
}

/// Adds `ip/prefix_len` to link `index`.
pub async fn add_address(
    handle: &Handle,
    index: u32,
    ip: Ipv4Addr,
    prefix_len: u8,
) -> Result<(), PluginError> {
    handle
        .address()
        .add(index, IpAddr::V4(ip), prefix_len)
        .execute()
        .await
        .map_err(PluginError::netlink(format!(
            "add address {ip}/{prefix_len} to link {index}"
        )))
}

/// IPv4 addresses (with prefix length) on link `index`.
pub async fn addresses(handle: &Handle, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, PluginError> {
    let msgs: Vec<AddressMessage> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(PluginError::netlink(format!(
            "list addresses of link {index}"
        )))?;
    Ok(msgs
        .iter()
        .filter(|m| m.header.index == index)
        .flat_map(|m| {
            m.attributes.iter().filter_map(move |a| match a {
                AddressAttribute::Local(IpAddr::V4(ip))
                | AddressAttribute::Address(IpAddr::V4(ip)) => Some((*ip, m.header.prefix_len)),
                _ => None,
            })
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect())
}

/// Adds (or replaces) the route `dst/32 dev index scope link` in the main table.
pub async fn replace_host_route(
    handle: &Handle,
    dst: Ipv4Addr,
    index: u32,
) -> Result<(), PluginError> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, 32)
        .output_interface(index)
        .scope(RouteScope::Link)
        .build();
    handle
        .route()
        .add(msg)
        .replace()
        .execute()
        .await
        .map_err(PluginError::netlink(format!(
            "add route {dst}/32 dev {index}"
        )))
}

/// Adds the route `default via gateway dev index` in the main table.
pub async fn replace_default_route(
    handle: &Handle,
    gateway: Ipv4Addr,
    index: u32,
) -> Result<(), PluginError> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .output_interface(index)
        .build();
    handle
        .route()
        .add(msg)
        .replace()
        .execute()
        .await
        .map_err(PluginError::netlink(format!(
            "add default route via {gateway} dev {index}"
        )))
}

/// All IPv4 routes of the main table.
pub async fn main_routes(handle: &Handle) -> Result<Vec<RouteState>, PluginError> {
    let msgs: Vec<RouteMessage> = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(PluginError::netlink("list routes"))?;
    Ok(msgs
        .iter()
        .map(RouteState::from_message)
        .filter(|r| r.table == MAIN_TABLE)
        .collect())
}
