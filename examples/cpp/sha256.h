// SHA-256 (FIPS 180-4) of a byte string, as lowercase hex: what manifest.json records for every file.
#pragma once

#include <string>

namespace torchport {

std::string sha256_hex(const std::string& bytes);

}  // namespace torchport
