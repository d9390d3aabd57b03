//! The core of socksify: a blocking SOCKS4 / SOCKS4a / SOCKS5 client that runs on a socket the
//! caller owns, proxy chains, and the configuration. It has no hooks: the preload library and
//! the CLI both build on it.

pub mod addr;
pub mod chain;
pub mod config;
pub mod contract;
pub mod directset;
pub mod dnswire;
pub mod error;
pub mod explain;
pub mod fakedns;
pub mod gssapi;
pub mod hosts;
pub mod http;
pub mod krb5;
pub mod learned;
pub mod logjson;
pub mod memory;
pub mod proxy;
pub mod proxychains;
pub mod resolvconf;
pub mod router;
pub mod routes;
pub mod session;
pub mod sockaddr;
pub mod stub;
pub mod sys;
pub mod v4;
pub mod v5;
pub mod wire;

pub use addr::TargetAddr;
pub use chain::{Chain, ChainError, ChainMode, Established, Timeouts};
pub use config::{BindMode, Config, ConfigError, DirectRule, DnsMode, Mode, UdpMode};
pub use directset::DirectSet;
pub use error::SocksError;
pub use proxy::{Command, Credentials, Host, Proxy, ProxyKind};
