// Score a CSV with a torchport bundle's AOTInductor package from C++.
//
//   torchport_score BUNDLE_DIR INPUT.csv > predictions.csv
//
// Reads manifest.json for the feature order and what the package needs (torch release, platform, CPU
// features), checks model.aoti.pt2 against its sha256, loads those checked bytes with
// torch::inductor::AOTIModelPackageLoader and prints one CSV row of predictions (<target>_pred columns)
// per input row. INPUT.csv has a header naming at least the features (any order, other columns ignored);
// values are plain numbers separated by commas (no quoting). Mistakes print one line and exit 2.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <ATen/Functions.h>
#include <torch/version.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "json.h"
#include "sha256.h"

namespace {

const char* const PACKAGE = "model.aoti.pt2";

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Failure(path + ": cannot be read");
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::vector<std::string> split(const std::string& line, char sep) {
  std::vector<std::string> out;
  std::string cell;
  std::istringstream in(line);
  while (std::getline(in, cell, sep)) out.push_back(cell);
  if (!line.empty() && line.back() == sep) out.emplace_back();
  return out;
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r"), b = s.find_last_not_of(" \t\r");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

std::set<std::string> cpu_flags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) == 0 && line.find(':') != std::string::npos) {
      std::istringstream words(line.substr(line.find(':') + 1));
      return {std::istream_iterator<std::string>(words), std::istream_iterator<std::string>()};
    }
  }
  return {};
}

// Refuse a package this process cannot run: another torch release, platform or device, or CPU features
// (an AVX-512 build on an AVX2 machine would die of SIGILL).
void check_requirements(const torchport::Json& entry, const std::string& where) {
  auto writer = entry.object.find("writer");
  if (writer == entry.object.end() || writer->second.kind != torchport::Json::Kind::Object) return;
  auto req = writer->second.object.find("requires");
  if (req == writer->second.object.end() || req->second.kind != torchport::Json::Kind::Object) return;
  const auto& r = req->second;
  std::string release = std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR);
  const std::string& torch = r.at("torch", where + ".requires").str(where + ".requires.torch");
  if (torch.rfind(release + ".", 0) != 0 && torch != release)
    throw Failure(where + " was compiled by torch " + torch + "; this program is built against libtorch " +
                  release + ": build it against that torch, or re-export the bundle with this one");
  if (r.at("device", where + ".requires").str(where + ".requires.device") != "cpu")
    throw Failure(where + " was compiled for " + r.at("device", where).text + ", not the CPU");
  std::set<std::string> have = cpu_flags(), lacking;
  if (have.empty()) return;  // no /proc/cpuinfo: nothing to check against
  for (const auto& flag : r.at("cpu_flags", where + ".requires").strings(where + ".requires.cpu_flags"))
    if (!have.count(flag)) lacking.insert(flag);
  if (!lacking.empty()) {
    std::string names;
    for (const auto& f : lacking) names += (names.empty() ? "" : " ") + f;
    throw Failure(where + " was compiled for CPU features this CPU lacks (" + names +
                  "); re-export the bundle on this machine or for a lower instruction set");
  }
}

at::Tensor read_rows(const std::string& path, const std::vector<std::string>& features) {
  std::ifstream in(path);
  if (!in) throw Failure(path + ": cannot be read");
  std::string line;
  if (!std::getline(in, line)) throw Failure(path + ": empty file, expected a header naming the features");
  if (line.rfind("\xEF\xBB\xBF", 0) == 0) line = line.substr(3);
  std::vector<std::string> header = split(line, ',');
  std::vector<size_t> column;
  for (const auto& name : features) {
    size_t j = 0;
    while (j < header.size() && trim(header[j]) != name) ++j;
    if (j == header.size()) throw Failure(path + ": no column named \"" + name + "\" (the model's features)");
    column.push_back(j);
  }
  std::vector<float> values;
  size_t row = 0;
  while (std::getline(in, line)) {
    if (trim(line).empty()) continue;
    ++row;
    std::vector<std::string> cells = split(line, ',');
    for (size_t k = 0; k < features.size(); ++k) {
      std::string cell = column[k] < cells.size() ? trim(cells[column[k]]) : "";
      char* end = nullptr;
      double v = std::strtod(cell.c_str(), &end);
      if (cell.empty() || *end != '\0' || !std::isfinite(v))
        throw Failure(path + ": row " + std::to_string(row) + ", column \"" + features[k] +
                      "\": expected a finite number, got \"" + cell + "\"");
      values.push_back(static_cast<float>(v));
    }
  }
  auto n = static_cast<int64_t>(row), f = static_cast<int64_t>(features.size());
  return at::from_blob(values.data(), {n, f}, at::kFloat).clone();
}

int run(const std::string& dir, const std::string& csv) {
  const std::string manifest_path = dir + "/manifest.json";
  torchport::Json manifest = torchport::parse_json(read_file(manifest_path));
  std::vector<std::string> features = manifest.at("features", manifest_path).strings(manifest_path + ".features");
  std::vector<std::string> targets = manifest.at("targets", manifest_path).strings(manifest_path + ".targets");
  const auto& files = manifest.at("files", manifest_path);
  if (!files.object.count(PACKAGE))
    throw Failure(dir + " has no " + PACKAGE + ": export the bundle with --formats onnx,aoti");
  const auto& entry = files.object.at(PACKAGE);
  const std::string where = manifest_path + ".files[\"" + PACKAGE + "\"]";
  check_requirements(entry, where);

  const std::string package = dir + "/" + PACKAGE;
  std::string bytes = read_file(package);
  if (torchport::sha256_hex(bytes) != entry.at("sha256", where).str(where + ".sha256"))
    throw Failure(package + " does not match the manifest's sha256: the file was changed or corrupted");
  at::Tensor x = read_rows(csv, features);

  // Load the bytes that were checked (a private copy), not the file, which could change in between.
  const char* tmp = std::getenv("TMPDIR");
  std::string copy = std::string(tmp && *tmp ? tmp : "/tmp") + "/torchport-score-XXXXXX.pt2";
  int fd = mkstemps(copy.data(), 4);
  if (fd < 0) throw Failure("cannot create a temporary file for the package");
  bool written = write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size());
  close(fd);
  if (!written) {
    std::remove(copy.c_str());
    throw Failure("cannot write a temporary copy of the package to " + copy);
  }
  std::vector<at::Tensor> out;
  try {
    torch::inductor::AOTIModelPackageLoader loader(copy);
    std::remove(copy.c_str());
    out = loader.run({x});
  } catch (...) {
    std::remove(copy.c_str());
    throw;
  }
  at::Tensor y = out.at(0).contiguous();
  if (y.dim() != 2 || y.size(0) != x.size(0) || y.size(1) != static_cast<int64_t>(targets.size()))
    throw Failure(package + " answered a tensor of shape " + std::to_string(y.dim()) + "-D, expected (rows, " +
                  std::to_string(targets.size()) + ")");
  for (size_t j = 0; j < targets.size(); ++j) std::printf("%s%s_pred", j ? "," : "", targets[j].c_str());
  std::printf("\n");
  const float* p = y.data_ptr<float>();
  for (int64_t i = 0; i < y.size(0); ++i) {
    for (int64_t j = 0; j < y.size(1); ++j) std::printf("%s%.9g", j ? "," : "", p[i * y.size(1) + j]);
    std::printf("\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: torchport_score BUNDLE_DIR INPUT.csv > predictions.csv\n");
    return 2;
  }
  try {
    return run(argv[1], argv[2]);
  } catch (const Failure& e) {
    std::fprintf(stderr, "torchport_score: error: %s\n", e.what());
  } catch (const std::runtime_error& e) {  // malformed manifest.json
    std::fprintf(stderr, "torchport_score: error: %s\n", e.what());
  }
  return 2;
}
