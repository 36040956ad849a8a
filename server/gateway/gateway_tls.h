// The gateway's TLS material: the PEM files its flags name (gateway_config.h), read and checked
// with OpenSSL once at start-up, and the HTTP(S) listener built from them.
//
// Checks: each file is readable and holds PEM blocks of the right kind (certificates, or one
// unencrypted private key), and a private key matches the first certificate of its chain. Every
// failure is InvalidArgument naming the flag and the file.
//
// Thread rules: the functions keep no state; call them from any thread.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "client/funnel_client.h"
#include "server/gateway/gateway_config.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace funnel {

// The listener's TLS, PEM text as checked by LoadHttpsCredentials.
struct HttpsCredentials {
  std::string cert_chain_pem;  // leaf first, then intermediates
  std::string key_pem;
  std::string client_ca_pem;  // "" : no client certificates asked for
};

// nullopt when `files` is not enabled (plain HTTP).
absl::StatusOr<std::optional<HttpsCredentials>> LoadHttpsCredentials(const HttpsFiles& files);

// The backend channels' TLS (ClientOptions::tls of funnel_client.h); nullopt for plaintext.
absl::StatusOr<std::optional<TlsOptions>> LoadBackendTls(const BackendTlsFiles& files);

// A plain httplib::Server, or an httplib::SSLServer (TLS 1.2 or later) serving `credentials`;
// with a client CA it asks for client certificates and refuses handshakes without a valid one.
// InvalidArgument when OpenSSL refuses the credentials.
absl::StatusOr<std::unique_ptr<httplib::Server>> MakeHttpServer(
    const std::optional<HttpsCredentials>& credentials);

}  // namespace funnel
