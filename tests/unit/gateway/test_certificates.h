// Certificates for TLS tests, made in memory with OpenSSL (ECDSA P-256, SHA-256, valid from an
// hour ago for a day): a self-signed CA, and certificates it signs.
#pragma once

#include <string>

namespace funnel::testing {

struct TestCertificate {
  std::string cert_pem;
  std::string key_pem;
};

// A self-signed CA certificate with subject CN=`name`.
TestCertificate MakeTestCa(const std::string& name);

// A certificate for CN=`name` signed by `ca`, with subjectAltName `san` (OpenSSL's syntax, e.g.
// "IP:127.0.0.1,DNS:localhost"; "" for none).
TestCertificate MakeTestCertificate(const TestCertificate& ca, const std::string& name,
                                    const std::string& san);

// `key_pem` re-encoded as encrypted PEM (AES-256-CBC) under `password`.
std::string EncryptTestKey(const std::string& key_pem, const std::string& password);

// Writes `text` to `path`; false when it cannot.
bool WriteTestFile(const std::string& path, const std::string& text);

}  // namespace funnel::testing
