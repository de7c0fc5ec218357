//! Reads a TLS ClientHello off a client socket without losing it.
//!
//! The front needs the SNI before the handshake (to pick the leaf, to refuse a name that differs
//! from the CONNECT target, later to fingerprint the client), and it must tell a TLS client from
//! one that sent plain bytes after CONNECT. The bytes read are returned so the caller can rewind
//! them into the stream the TLS acceptor reads.

use std::time::Duration;

use tls_parser::{
    parse_tls_extensions, parse_tls_message_handshake, SNIType, TlsExtension, TlsMessage,
    TlsMessageHandshake,
};
use tokio::io::{AsyncRead, AsyncReadExt};

const RECORD_HEADER: usize = 5;
const CONTENT_TYPE_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
/// A ClientHello larger than this (post-quantum key shares make them ~2 KiB) is not a client we
/// want to serve.
const MAX_HELLO_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    #[error("client sent non-TLS bytes where a ClientHello was expected")]
    NotTls,
    #[error("client closed the connection before completing its ClientHello")]
    Closed,
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    #[error("ClientHello larger than {MAX_HELLO_BYTES} bytes")]
    TooLarge,
    #[error("no ClientHello within {0:?}")]
    Timeout(Duration),
    #[error("reading ClientHello: {0}")]
    Io(#[from] std::io::Error),
}

impl HelloError {
    /// The `aigate_connections_rejected_total` reason for a connection closed over this error.
    pub fn metric_label(&self) -> &'static str {
        match self {
            HelloError::NotTls => "not_tls",
            HelloError::Closed => "closed",
            HelloError::Timeout(_) => "timeout",
            _ => "malformed",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The server name the client asked for, lowercased.
    pub sni: Option<String>,
    pub alpn: Vec<Vec<u8>>,
    /// The JA4 fingerprint of the hello (FoxIO's spec), which identifies the client software.
    pub ja4: Option<String>,
    /// The client lists a ChaCha20-Poly1305 suite first, as clients without AES instructions
    /// do: its own order is then the one to honour.
    pub prefers_chacha20: bool,
}

/// TLS 1.3 `TLS_CHACHA20_POLY1305_SHA256` and the TLS 1.2 ECDHE ChaCha20-Poly1305 suites.
const CHACHA20_SUITES: [u16; 3] = [0x1303, 0xcca8, 0xcca9];

/// Reads whole TLS records until the first handshake message (the ClientHello) is complete.
/// `buffer` may already hold bytes read earlier (pipelined after CONNECT); on success it holds every
/// byte read, to be replayed to the TLS acceptor.
pub async fn read_client_hello<S>(
    stream: &mut S,
    buffer: &mut Vec<u8>,
    timeout: Duration,
) -> Result<ClientHello, HelloError>
where
    S: AsyncRead + Unpin,
{
    tokio::time::timeout(timeout, read_records(stream, buffer))
        .await
        .map_err(|_| HelloError::Timeout(timeout))?
}

async fn read_records<S>(stream: &mut S, buffer: &mut Vec<u8>) -> Result<ClientHello, HelloError>
where
    S: AsyncRead + Unpin,
{
    let mut handshake = Vec::new();
    let mut offset = 0;
    loop {
        fill(stream, buffer, offset + RECORD_HEADER).await?;
        let header = &buffer[offset..offset + RECORD_HEADER];
        if header[0] != CONTENT_TYPE_HANDSHAKE || header[1] != 0x03 {
            return Err(HelloError::NotTls);
        }
        let record_len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if record_len == 0 {
            return Err(HelloError::Malformed("empty handshake record"));
        }
        let record_end = offset + RECORD_HEADER + record_len;
        if record_end > MAX_HELLO_BYTES {
            return Err(HelloError::TooLarge);
        }
        fill(stream, buffer, record_end).await?;
        handshake.extend_from_slice(&buffer[offset + RECORD_HEADER..record_end]);
        offset = record_end;

        if handshake.len() >= 4 {
            if handshake[0] != HANDSHAKE_CLIENT_HELLO {
                return Err(HelloError::Malformed(
                    "first handshake message is not a ClientHello",
                ));
            }
            let message_len =
                u32::from_be_bytes([0, handshake[1], handshake[2], handshake[3]]) as usize;
            if 4 + message_len > MAX_HELLO_BYTES {
                return Err(HelloError::TooLarge);
            }
            if handshake.len() >= 4 + message_len {
                return parse(&handshake[..4 + message_len]);
            }
        }
    }
}

async fn fill<S>(stream: &mut S, buffer: &mut Vec<u8>, wanted: usize) -> Result<(), HelloError>
where
    S: AsyncRead + Unpin,
{
    let mut chunk = [0u8; 4096];
    while buffer.len() < wanted {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(HelloError::Closed);
        }
        buffer.extend_from_slice(&chunk[..read]);
        if buffer.len() > MAX_HELLO_BYTES + RECORD_HEADER {
            return Err(HelloError::TooLarge);
        }
    }
    Ok(())
}

fn parse(message: &[u8]) -> Result<ClientHello, HelloError> {
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)))) =
        parse_tls_message_handshake(message)
    else {
        return Err(HelloError::Malformed("ClientHello does not parse"));
    };
    let mut result = ClientHello {
        prefers_chacha20: hello
            .ciphers
            .iter()
            .map(|c| c.0)
            .find(|c| !is_grease(*c))
            .is_some_and(|c| CHACHA20_SUITES.contains(&c)),
        ..ClientHello::default()
    };
    let Some(extensions) = hello.ext else {
        result.ja4 = Some(ja4(&hello, &[], false, &[], &[]));
        return Ok(result);
    };
    let raw_extensions = extensions;
    let Ok((_, extensions)) = parse_tls_extensions(extensions) else {
        return Err(HelloError::Malformed("ClientHello extensions do not parse"));
    };
    let mut versions = Vec::new();
    let mut signature_algorithms: &[u16] = &[];
    for extension in &extensions {
        match extension {
            TlsExtension::SupportedVersions(list) => versions = list.iter().map(|v| v.0).collect(),
            TlsExtension::SignatureAlgorithms(list) => signature_algorithms = list,
            _ => {}
        }
    }
    let extension_types = extension_types(raw_extensions);
    let has_sni = extension_types.contains(&0x0000);
    for extension in extensions.iter().cloned() {
        match extension {
            TlsExtension::SNI(names) => {
                let host_name = names
                    .iter()
                    .find(|(kind, _)| *kind == SNIType::HostName)
                    .map(|(_, name)| name);
                if let Some(name) = host_name {
                    let name = std::str::from_utf8(name)
                        .map_err(|_| HelloError::Malformed("SNI is not UTF-8"))?;
                    result.sni = Some(crate::host::normalize(name));
                }
            }
            TlsExtension::ALPN(protocols) => {
                result.alpn = protocols.iter().map(|p| p.to_vec()).collect();
            }
            _ => {}
        }
    }
    let max_version = versions.into_iter().filter(|v| !is_grease(*v)).max();
    let mut hello_for_ja4 = hello;
    if let Some(version) = max_version {
        hello_for_ja4.version = tls_parser::TlsVersion(version);
    }
    let first_alpn = result.alpn.first().map(Vec::as_slice);
    result.ja4 = Some(ja4(
        &hello_for_ja4,
        &extension_types,
        has_sni,
        first_alpn.unwrap_or_default(),
        signature_algorithms,
    ));
    Ok(result)
}

/// GREASE values (RFC 8701) are random per connection and excluded from fingerprints.
fn is_grease(value: u16) -> bool {
    value & 0x0f0f == 0x0a0a && value >> 8 == value & 0xff
}

/// The extension type codes in wire order, read from the raw extensions block.
fn extension_types(mut raw: &[u8]) -> Vec<u16> {
    let mut types = Vec::new();
    while raw.len() >= 4 {
        let kind = u16::from_be_bytes([raw[0], raw[1]]);
        let len = usize::from(u16::from_be_bytes([raw[2], raw[3]]));
        types.push(kind);
        raw = raw.get(4 + len..).unwrap_or_default();
    }
    types
}

fn truncated_sha256(text: &str) -> String {
    use sha2::Digest;
    if text.is_empty() {
        return "000000000000".to_owned();
    }
    let digest = sha2::Sha256::digest(text.as_bytes());
    hex::encode(&digest[..6])
}

fn hex_list(values: impl Iterator<Item = u16>) -> String {
    values
        .map(|v| format!("{v:04x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// JA4 `a_b_c`: protocol, version, SNI, cipher and extension counts and ALPN; a hash of the
/// sorted ciphers; a hash of the sorted extensions (without SNI and ALPN) and the signature
/// algorithms in order. GREASE is ignored throughout.
fn ja4(
    hello: &tls_parser::TlsClientHelloContents<'_>,
    extension_types: &[u16],
    has_sni: bool,
    alpn: &[u8],
    signature_algorithms: &[u16],
) -> String {
    let version = match hello.version.0 {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        _ => "00",
    };
    let mut ciphers: Vec<u16> = hello
        .ciphers
        .iter()
        .map(|c| c.0)
        .filter(|c| !is_grease(*c))
        .collect();
    let extensions: Vec<u16> = extension_types
        .iter()
        .copied()
        .filter(|e| !is_grease(*e))
        .collect();
    let alpn_code = match (alpn.first(), alpn.last()) {
        (Some(&first), Some(&last))
            if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() =>
        {
            format!("{}{}", char::from(first), char::from(last))
        }
        (Some(&first), Some(&last)) => {
            let first = format!("{first:02x}");
            let last = format!("{last:02x}");
            format!("{}{}", &first[..1], &last[1..])
        }
        _ => "00".to_owned(),
    };
    let a = format!(
        "t{version}{}{:02}{:02}{alpn_code}",
        if has_sni { 'd' } else { 'i' },
        ciphers.len().min(99),
        extensions.len().min(99),
    );
    ciphers.sort_unstable();
    let b = truncated_sha256(&hex_list(ciphers.into_iter()));
    let mut sorted: Vec<u16> = extensions
        .into_iter()
        .filter(|&e| e != 0x0000 && e != 0x0010)
        .collect();
    sorted.sort_unstable();
    let mut c_input = hex_list(sorted.into_iter());
    let signatures: Vec<u16> = signature_algorithms
        .iter()
        .copied()
        .filter(|s| !is_grease(*s))
        .collect();
    if !signatures.is_empty() {
        c_input.push('_');
        c_input.push_str(&hex_list(signatures.into_iter()));
    }
    format!("{a}_{b}_{}", truncated_sha256(&c_input))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ClientHello produced by rustls for `api.openai.com` with ALPN h2/http1.1.
    fn rustls_client_hello(server_name: &str) -> Vec<u8> {
        rustls_client_hello_offering(server_name, rustls::crypto::ring::default_provider())
    }

    /// The same, offering `provider`'s cipher suites in its order.
    fn rustls_client_hello_offering(
        server_name: &str,
        provider: rustls::crypto::CryptoProvider,
    ) -> Vec<u8> {
        use rustls::pki_types::ServerName;
        let roots = rustls::RootCertStore::empty();
        let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let name = ServerName::try_from(server_name.to_owned()).unwrap();
        let mut connection =
            rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let mut bytes = Vec::new();
        connection.write_tls(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn notices_a_client_that_puts_chacha20_first() {
        let parsed = |hello: Vec<u8>| parse(&hello[5..]).unwrap();
        assert!(!parsed(rustls_client_hello("api.openai.com")).prefers_chacha20);
        let mut chacha_first = rustls::crypto::ring::default_provider();
        chacha_first.cipher_suites.sort_by_key(|suite| {
            suite.suite() != rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        });
        let hello = rustls_client_hello_offering("api.openai.com", chacha_first);
        assert!(parsed(hello).prefers_chacha20);
    }

    #[tokio::test]
    async fn extracts_sni_and_alpn_and_keeps_every_byte() {
        let hello = rustls_client_hello("API.OpenAI.com");
        let mut reader = &hello[..];
        let mut buffer = Vec::new();
        let parsed = read_client_hello(&mut reader, &mut buffer, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(parsed.sni.as_deref(), Some("api.openai.com"));
        assert_eq!(parsed.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(buffer, hello);
        let ja4 = parsed.ja4.unwrap();
        let parts: Vec<&str> = ja4.split('_').collect();
        assert_eq!(parts.len(), 3, "{ja4}");
        assert!(
            parts[0].starts_with("t13d") && parts[0].ends_with("h2"),
            "{ja4}"
        );
        assert!(parts[1..].iter().all(|p| p.len() == 12), "{ja4}");
    }

    #[test]
    fn ja4_ignores_grease_and_hashes_sorted_lists() {
        assert!(is_grease(0x0a0a) && is_grease(0xfafa) && !is_grease(0x0a0b));
        // The example from the JA4 specification's cipher section.
        assert_eq!(
            truncated_sha256(
                "002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9"
            ),
            "8daaf6152771"
        );
    }

    #[tokio::test]
    async fn hello_split_across_records_is_reassembled() {
        let hello = rustls_client_hello("claude.ai");
        let body = &hello[RECORD_HEADER..];
        let (first, second) = body.split_at(40);
        let mut split = Vec::new();
        for part in [first, second] {
            split.extend_from_slice(&[0x16, 0x03, 0x01]);
            split.extend_from_slice(&(part.len() as u16).to_be_bytes());
            split.extend_from_slice(part);
        }
        let mut reader = &split[..];
        let mut buffer = Vec::new();
        let parsed = read_client_hello(&mut reader, &mut buffer, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(parsed.sni.as_deref(), Some("claude.ai"));
    }

    #[tokio::test]
    async fn plain_http_after_connect_is_not_tls() {
        let mut reader = &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..];
        let error = read_client_hello(&mut reader, &mut Vec::new(), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(error, HelloError::NotTls), "{error}");
    }

    #[tokio::test]
    async fn truncated_and_garbage_hellos_are_errors_not_panics() {
        let hello = rustls_client_hello("api.openai.com");
        for cut in [1, 5, 6, 50, hello.len() - 1] {
            let mut reader = &hello[..cut];
            let error = read_client_hello(&mut reader, &mut Vec::new(), Duration::from_secs(1))
                .await
                .unwrap_err();
            assert!(matches!(error, HelloError::Closed), "cut {cut}: {error}");
        }
        let mut garbage = vec![
            0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04, 0xff, 0xff, 0xff, 0xff,
        ];
        let mut reader = &garbage[..];
        assert!(
            read_client_hello(&mut reader, &mut Vec::new(), Duration::from_secs(1))
                .await
                .is_err()
        );
        garbage[5] = 0x02;
        let mut reader = &garbage[..];
        assert!(matches!(
            read_client_hello(&mut reader, &mut Vec::new(), Duration::from_secs(1)).await,
            Err(HelloError::Malformed(_))
        ));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    /// A ClientHello as rustls writes it for `name`.
    fn hello_for(name: &str) -> Vec<u8> {
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let mut connection =
            rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let mut bytes = Vec::new();
        connection.write_tls(&mut bytes).unwrap();
        bytes
    }

    /// What `read_client_hello` makes of `bytes` arriving `split` bytes at a time, then EOF.
    fn peek(bytes: &[u8], split: usize) -> (Result<ClientHello, HelloError>, Vec<u8>) {
        let mut stream = Trickle {
            data: bytes.to_vec(),
            at: 0,
            split,
        };
        let mut buffer = Vec::new();
        let result = runtime().block_on(read_client_hello(
            &mut stream,
            &mut buffer,
            Duration::from_secs(5),
        ));
        (result, buffer)
    }

    /// An in-memory stream that hands out at most `split` bytes per read.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        split: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let end = (self.at + self.split.max(1))
                .min(self.data.len())
                .min(self.at + buf.remaining());
            buf.put_slice(&self.data[self.at..end]);
            self.at = end;
            std::task::Poll::Ready(Ok(()))
        }
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            bytes in proptest::collection::vec(any::<u8>(), 0..4096),
            split in 1usize..600,
        ) {
            let (_, buffer) = peek(&bytes, split);
            prop_assert!(buffer.len() <= bytes.len());
            let _ = parse(&bytes);
        }

        #[test]
        fn the_sni_of_a_real_hello_is_read_in_any_fragmentation(
            name in "[a-z][a-z0-9-]{0,20}[a-z0-9](\\.[a-z][a-z0-9]{0,10}){1,3}",
            split in 1usize..400,
        ) {
            let hello = hello_for(&name);
            let (result, buffer) = peek(&hello, split);
            let parsed = result.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parsed.sni.as_deref(), Some(name.as_str()));
            prop_assert_eq!(buffer, hello, "every byte read is kept for the replay");
        }

        #[test]
        fn a_corrupted_hello_never_panics(
            position in any::<prop::sample::Index>(),
            value in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut hello = hello_for("api.openai.com");
            let at = position.index(hello.len());
            hello[at] = value;
            hello.truncate(cut.index(hello.len()) + 1);
            let (_, buffer) = peek(&hello, 97);
            prop_assert!(buffer.len() <= hello.len());
            if hello.len() > 5 {
                let _ = parse(&hello[5..]);
            }
        }
    }
}
