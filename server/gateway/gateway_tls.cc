#include "server/gateway/gateway_tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <fstream>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/util/status_macros.h"

// httplib.h declares SSLServer only with this macro, and the Debian library is built with it: a
// translation unit without it would see other class layouts (pkg-config's cpp-httplib Cflags
// define it for every target that links PkgConfig::HTTPLIB).
#ifndef CPPHTTPLIB_OPENSSL_SUPPORT
#error "CPPHTTPLIB_OPENSSL_SUPPORT must be defined (link PkgConfig::HTTPLIB)"
#endif
#include "httplib.h"

namespace funnel {
namespace {

constexpr size_t kMaxPemBytes = 1 << 20;
constexpr char kSessionIdContext[] = "funnel-gateway";

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

// OpenSSL's oldest queued error as text ("" when none); empties this thread's queue.
std::string TakeOpenSslError() {
  const unsigned long code = ERR_get_error();
  std::string text;
  if (code != 0) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof(buf));
    text = absl::StrCat(": ", buf);
  }
  ERR_clear_error();
  return text;
}

// Never prompts on the terminal: encrypted keys fail to load instead.
int NoPassword(char*, int, int, void*) { return 0; }

BioPtr MemoryBio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// The file's text (at most kMaxPemBytes). `what`: "--flag PATH", for messages.
absl::StatusOr<std::string> ReadPemFile(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open()) return absl::InvalidArgumentError(absl::StrCat(what, ": cannot open"));
  std::string text(kMaxPemBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) return absl::InvalidArgumentError(absl::StrCat(what, ": cannot read"));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxPemBytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": larger than 1 MiB, not a PEM file"));
  }
  return text;
}

// Every "CERTIFICATE" block of `pem`, in order (blocks of other kinds are skipped); at least one.
absl::StatusOr<std::vector<X509Ptr>> ParseCertificates(const std::string& pem,
                                                       const std::string& what) {
  ERR_clear_error();
  BioPtr bio = MemoryBio(pem);
  std::vector<X509Ptr> certs;
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, NoPassword, nullptr)) {
    certs.emplace_back(cert);
  }
  // Reading stops with "no start line" at the end of the text; any other error is a bad block.
  const unsigned long last = ERR_peek_last_error();
  const bool at_end =
      ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE;
  if (last != 0 && !at_end) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": a malformed PEM certificate", TakeOpenSslError()));
  }
  ERR_clear_error();
  if (certs.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": holds no PEM certificate"));
  }
  return certs;
}

absl::StatusOr<PkeyPtr> ParsePrivateKey(const std::string& pem, const std::string& what) {
  ERR_clear_error();
  BioPtr bio = MemoryBio(pem);
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassword, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": holds no usable PEM private key (encrypted keys are not supported)",
                     TakeOpenSslError()));
  }
  return key;
}

// Reads a certificate chain and its key and checks that the key belongs to the chain's leaf.
absl::Status ReadKeyPair(const std::string& cert_flag, const std::string& cert_file,
                         const std::string& key_flag, const std::string& key_file,
                         std::string& cert_pem, std::string& key_pem) {
  const std::string cert_what = absl::StrCat(cert_flag, " ", cert_file);
  const std::string key_what = absl::StrCat(key_flag, " ", key_file);
  ASSIGN_OR_RETURN(cert_pem, ReadPemFile(cert_file, cert_what));
  ASSIGN_OR_RETURN(key_pem, ReadPemFile(key_file, key_what));
  ASSIGN_OR_RETURN(std::vector<X509Ptr> chain, ParseCertificates(cert_pem, cert_what));
  ASSIGN_OR_RETURN(PkeyPtr key, ParsePrivateKey(key_pem, key_what));
  if (X509_check_private_key(chain.front().get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat(key_what, ": not the private key of the certificate in ", cert_what));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadCertificates(const std::string& flag, const std::string& file) {
  const std::string what = absl::StrCat(flag, " ", file);
  ASSIGN_OR_RETURN(std::string pem, ReadPemFile(file, what));
  RETURN_IF_ERROR(ParseCertificates(pem, what).status());
  return pem;
}

absl::Status OpenSslFailure(const std::string& step) {
  return absl::InvalidArgumentError(absl::StrCat("TLS set-up failed: ", step, TakeOpenSslError()));
}

absl::Status UseChainAndKey(const HttpsCredentials& c, SSL_CTX& ctx) {
  ASSIGN_OR_RETURN(std::vector<X509Ptr> chain, ParseCertificates(c.cert_chain_pem, "--tls-cert"));
  ASSIGN_OR_RETURN(PkeyPtr key, ParsePrivateKey(c.key_pem, "--tls-key"));
  if (SSL_CTX_use_certificate(&ctx, chain.front().get()) != 1) {
    return OpenSslFailure("--tls-cert's certificate");
  }
  for (size_t i = 1; i < chain.size(); ++i) {
    if (SSL_CTX_add1_chain_cert(&ctx, chain[i].get()) != 1) {
      return OpenSslFailure("--tls-cert's chain");
    }
  }
  if (SSL_CTX_use_PrivateKey(&ctx, key.get()) != 1 || SSL_CTX_check_private_key(&ctx) != 1) {
    return OpenSslFailure("--tls-key");
  }
  return absl::OkStatus();
}

// Trust `client_ca_pem` for client certificates and require one in every handshake.
absl::Status RequireClientCertificates(const std::string& client_ca_pem, SSL_CTX& ctx) {
  ASSIGN_OR_RETURN(std::vector<X509Ptr> cas, ParseCertificates(client_ca_pem, "--tls-client-ca"));
  X509_STORE* store = SSL_CTX_get_cert_store(&ctx);
  for (const X509Ptr& ca : cas) {
    if (X509_STORE_add_cert(store, ca.get()) != 1 || SSL_CTX_add_client_CA(&ctx, ca.get()) != 1) {
      return OpenSslFailure("--tls-client-ca");
    }
  }
  SSL_CTX_set_verify(&ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  return absl::OkStatus();
}

absl::Status ConfigureServerContext(const HttpsCredentials& c, SSL_CTX& ctx) {
  if (SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION) != 1) {
    return OpenSslFailure("TLS 1.2 as the oldest version");
  }
  SSL_CTX_set_options(&ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  // Session resumption with client certificates needs a context id.
  SSL_CTX_set_session_id_context(&ctx, reinterpret_cast<const unsigned char*>(kSessionIdContext),
                                 sizeof(kSessionIdContext) - 1);
  RETURN_IF_ERROR(UseChainAndKey(c, ctx));
  if (!c.client_ca_pem.empty()) RETURN_IF_ERROR(RequireClientCertificates(c.client_ca_pem, ctx));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::optional<HttpsCredentials>> LoadHttpsCredentials(const HttpsFiles& files) {
  if (!files.enabled()) return std::optional<HttpsCredentials>();
  HttpsCredentials c;
  RETURN_IF_ERROR(ReadKeyPair("--tls-cert", files.cert_file, "--tls-key", files.key_file,
                              c.cert_chain_pem, c.key_pem));
  if (!files.client_ca_file.empty()) {
    ASSIGN_OR_RETURN(c.client_ca_pem, ReadCertificates("--tls-client-ca", files.client_ca_file));
  }
  return std::optional<HttpsCredentials>(std::move(c));
}

absl::StatusOr<std::optional<TlsOptions>> LoadBackendTls(const BackendTlsFiles& files) {
  if (!files.enabled) return std::optional<TlsOptions>();
  TlsOptions tls;
  if (!files.ca_file.empty()) {
    ASSIGN_OR_RETURN(tls.root_certs_pem, ReadCertificates("--backend-tls-ca", files.ca_file));
  }
  if (!files.cert_file.empty()) {
    RETURN_IF_ERROR(ReadKeyPair("--backend-tls-cert", files.cert_file, "--backend-tls-key",
                                files.key_file, tls.client_cert_pem, tls.client_key_pem));
  }
  tls.server_name_override = files.server_name;
  return std::optional<TlsOptions>(std::move(tls));
}

absl::StatusOr<std::unique_ptr<httplib::Server>> MakeHttpServer(
    const std::optional<HttpsCredentials>& credentials) {
  if (!credentials) return std::make_unique<httplib::Server>();
  absl::Status configured = absl::InternalError("OpenSSL could not create a TLS context");
  auto server = std::make_unique<httplib::SSLServer>([&](SSL_CTX& ctx) {
    configured = ConfigureServerContext(*credentials, ctx);
    return configured.ok();
  });
  if (!server->is_valid()) {
    return configured.ok() ? absl::InternalError("the HTTPS server is not usable") : configured;
  }
  return std::unique_ptr<httplib::Server>(std::move(server));
}

}  // namespace funnel
