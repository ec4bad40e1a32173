// A small JSON reader for manifest.json: objects, arrays, strings, numbers, true, false, null.
#pragma once

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace torchport {

struct Json {
  enum class Kind { Null, Bool, Number, String, Array, Object };
  Kind kind = Kind::Null;
  bool boolean = false;
  double number = 0;
  std::string text;
  std::vector<Json> array;
  std::map<std::string, Json> object;

  // The member `key` of an object; std::runtime_error naming `where` when it is absent or not an object.
  const Json& at(const std::string& key, const std::string& where) const;
  // This value as a string (or a list of strings); std::runtime_error naming `where` otherwise.
  const std::string& str(const std::string& where) const;
  std::vector<std::string> strings(const std::string& where) const;
};

// Parse JSON text; std::runtime_error with the byte offset of the first error.
Json parse_json(const std::string& text);

}  // namespace torchport
