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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The server name the client asked for, lowercased.
    pub sni: Option<String>,
    pub alpn: Vec<Vec<u8>>,
}

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
    let mut result = ClientHello::default();
    let Some(extensions) = hello.ext else {
        return Ok(result);
    };
    let Ok((_, extensions)) = parse_tls_extensions(extensions) else {
        return Err(HelloError::Malformed("ClientHello extensions do not parse"));
    };
    for extension in extensions {
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
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ClientHello produced by rustls for `api.openai.com` with ALPN h2/http1.1.
    fn rustls_client_hello(server_name: &str) -> Vec<u8> {
        use rustls::pki_types::ServerName;
        let roots = rustls::RootCertStore::empty();
        let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
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
