// neo_run: run a neocompile package without Python, a thin program over the package's C API (neocompile_rt.h).
//
//   neo_run [--threads N] <model> <io-dir>
//   neo_run [--threads N] --repeat N [--warmup M] <model> [<io-dir>]
//   neo_run [--threads N] --load-only <model>
//
// <model> is the package folder or its compiled.so. <io-dir>/inputs.txt has one line per input, in order:
//   <dtype> <ndim> <d0> ... <d(ndim-1)> <path-to-raw-little-endian-file>
// (a relative path is taken relative to <io-dir>). Every output (tuples flattened depth first) is written to
// <io-dir>/output_<i>.bin and described in <io-dir>/outputs.txt in the same format (with the bare file name);
// <io-dir>/timing.txt gets "load_s", "run_s" and "threads" lines (with --repeat also "runs", "warmup",
// "median_ms", "p90_ms", "min_ms").
//
// --repeat N --warmup M: a latency mode. The package loads once, runs M times unmeasured, then N times measured,
// and one line on stdout gives the median, p90 and minimum of the N runs. Inputs come from <io-dir> when given,
// else zero-filled at the shapes compiled.meta declares. --load-only: load the package and its weights, run
// nothing, print one line. stdout carries nothing else.
//
// Threads: --threads N, else $NEOCOMPILE_NUM_THREADS, else $TVM_NUM_THREADS, else every CPU this process may run
// on (its affinity mask), not pinned (the C API's rules). Weights, glibc floor, architecture and device checks are
// the C API's (nrt_load).
//
// A malformed command line or thread count: a message on stderr and exit status 2; any other failure: a message
// on stderr and exit status 1.
#include "neocompile_rt.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void Fail(const std::string& msg) { throw std::runtime_error(msg); }

void Check(int rc) {
  if (rc != 0) Fail(nrt_last_error());
}

struct TensorSpec {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string path;
};

struct Buffer {  // 64-byte aligned, so the C API borrows it instead of copying
  void* data = nullptr;
  size_t bytes = 0;
  explicit Buffer(size_t n) : bytes(n) {
    if (posix_memalign(&data, 64, n ? n : 64) != 0) Fail("out of memory");
    std::memset(data, 0, n);
  }
  ~Buffer() { std::free(data); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

std::string JoinPath(const std::string& dir, const std::string& p) {
  if (!p.empty() && p[0] == '/') return p;
  return dir + "/" + p;
}

size_t DtypeBytes(const std::string& dtype) {
  if (dtype == "bool") return 1;
  size_t digits = dtype.find_first_of("0123456789");
  if (digits == std::string::npos) Fail("unknown dtype " + dtype);
  size_t bits = std::strtoul(dtype.c_str() + digits, nullptr, 10);
  size_t x = dtype.find('x', digits);
  size_t lanes = x == std::string::npos ? 1 : std::strtoul(dtype.c_str() + x + 1, nullptr, 10);
  return (bits * lanes + 7) / 8;
}

size_t NumBytes(const TensorSpec& s) {
  size_t n = DtypeBytes(s.dtype);
  for (int64_t d : s.shape) n *= static_cast<size_t>(d);
  return n;
}

std::vector<TensorSpec> ReadSpecs(const std::string& file) {
  std::ifstream in(file);
  if (!in) Fail("cannot open " + file);
  std::vector<TensorSpec> specs;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::istringstream ss(line);
    TensorSpec s;
    int ndim = -1;
    if (!(ss >> s.dtype >> ndim) || ndim < 0) Fail(file + ":" + std::to_string(lineno) + ": bad line: " + line);
    for (int i = 0; i < ndim; ++i) {
      int64_t d;
      if (!(ss >> d) || d < 0) Fail(file + ":" + std::to_string(lineno) + ": bad dimension: " + line);
      s.shape.push_back(d);
    }
    std::getline(ss >> std::ws, s.path);
    while (!s.path.empty() && (s.path.back() == '\r' || s.path.back() == ' ')) s.path.pop_back();
    if (s.path.empty()) Fail(file + ":" + std::to_string(lineno) + ": missing data path: " + line);
    specs.push_back(std::move(s));
  }
  return specs;
}

void ReadData(const TensorSpec& s, const std::string& dir, Buffer* buf) {
  std::string path = JoinPath(dir, s.path);
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) Fail("cannot open input data " + path);
  std::streamoff size = in.tellg();
  if (size != static_cast<std::streamoff>(buf->bytes)) {
    Fail("input data " + path + " has " + std::to_string(size) + " bytes; " + s.dtype + " shape needs " +
         std::to_string(buf->bytes));
  }
  in.seekg(0);
  if (buf->bytes && !in.read(static_cast<char*>(buf->data), buf->bytes)) Fail("cannot read " + path);
}

// The inputs: from <io-dir>/inputs.txt, else zeros at the shapes the package declares.
std::vector<TensorSpec> InputSpecs(nrt_model* m, const std::string& dir) {
  if (!dir.empty()) return ReadSpecs(dir + "/inputs.txt");
  int n = 0;
  Check(nrt_num_inputs(m, &n));
  std::vector<TensorSpec> specs;
  for (int i = 0; i < n; ++i) {
    const char* name = nullptr;
    const char* dtype = nullptr;
    const int64_t* shape = nullptr;
    int ndim = 0;
    Check(nrt_input_name(m, i, &name));
    Check(nrt_input_dtype(m, i, &dtype));
    Check(nrt_input_shape(m, i, &ndim, &shape));
    TensorSpec s;
    s.dtype = dtype;
    if (ndim < 0 || s.dtype.empty()) Fail(std::string("input '") + name + "': no declared shape (no compiled.meta); give inputs with an <io-dir>");
    for (int d = 0; d < ndim; ++d) {
      if (shape[d] < 0) Fail(std::string("input '") + name + "' has a dimension of any size; give inputs with an <io-dir>");
      s.shape.push_back(shape[d]);
    }
    specs.push_back(std::move(s));
  }
  return specs;
}

void WriteOutputs(nrt_model* m, const std::string& dir) {
  int n = 0;
  Check(nrt_num_outputs(m, &n));
  std::ostringstream index;
  for (int i = 0; i < n; ++i) {
    int ndim = 0;
    Check(nrt_output_shape(m, i, &ndim, nullptr));
    std::vector<int64_t> shape(ndim);
    Check(nrt_output_shape(m, i, &ndim, shape.data()));
    const char* dtype = nullptr;
    const void* data = nullptr;
    size_t nbytes = 0;
    Check(nrt_output_dtype(m, i, &dtype));
    Check(nrt_output_bytes(m, i, &nbytes));
    Check(nrt_output_data(m, i, &data));
    std::string name = "output_" + std::to_string(i) + ".bin";
    std::string path = dir + "/" + name;
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out || (nbytes && !out.write(static_cast<const char*>(data), nbytes)) || !out.flush()) Fail("cannot write " + path);
    index << dtype << ' ' << ndim;
    for (int64_t d : shape) index << ' ' << d;
    index << ' ' << name << '\n';
  }
  std::string index_path = dir + "/outputs.txt";
  std::string tmp = index_path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out || !(out << index.str()) || !out.flush()) Fail("cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), index_path.c_str()) != 0) Fail("cannot rename " + tmp);
}

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// "N" as a count (an integer >= minimum); `what` names the option.
int ParseCount(const std::string& text, const std::string& what, int minimum) {
  bool digits = !text.empty() && text.size() <= 9 && text.find_first_not_of("0123456789") == std::string::npos;
  int value = digits ? std::atoi(text.c_str()) : -1;
  if (value < minimum) throw UsageError(what + ": '" + text + "' is not valid; expected an integer >= " + std::to_string(minimum));
  return value;
}

struct Options {
  int threads = 0;
  bool load_only = false;
  int repeat = 0;
  int warmup = -1;
  std::string model, dir;
};

int Run(const Options& o) {
  if (o.threads == 0) {  // a malformed environment setting is a usage error, reported before anything loads
    for (const char* name : {"NEOCOMPILE_NUM_THREADS", "TVM_NUM_THREADS"}) {
      const char* value = std::getenv(name);
      if (value != nullptr && *value != '\0') {
        ParseCount(value, name, 1);
        break;
      }
    }
  }
  auto t0 = std::chrono::steady_clock::now();
  nrt_model* m = nullptr;
  Check(nrt_load(o.model.c_str(), o.threads, &m));
  struct Free {
    nrt_model* m;
    ~Free() { nrt_free(m); }
  } guard{m};
  auto t1 = std::chrono::steady_clock::now();
  if (o.load_only) {  // proves the package loads on this OS without running the model's code
    std::cout << "neo_run: " << o.model << " loaded\n";
    return 0;
  }
  std::vector<TensorSpec> specs = InputSpecs(m, o.dir);
  std::vector<Buffer*> buffers;
  struct FreeBuffers {
    std::vector<Buffer*>* b;
    ~FreeBuffers() {
      for (Buffer* x : *b) delete x;
    }
  } free_buffers{&buffers};
  for (size_t i = 0; i < specs.size(); ++i) {
    buffers.push_back(new Buffer(NumBytes(specs[i])));
    if (!o.dir.empty()) ReadData(specs[i], o.dir, buffers.back());
    Check(nrt_set_input(m, static_cast<int>(i), buffers.back()->data, specs[i].dtype.c_str(),
                        static_cast<int>(specs[i].shape.size()), specs[i].shape.data()));
  }
  int threads = 0;
  Check(nrt_get_num_threads(m, &threads));
  std::ostringstream timing;
  timing << "load_s " << Seconds(t0, t1) << '\n';
  if (o.repeat > 0) {
    int warmup = o.warmup < 0 ? std::min(10, std::max(1, o.repeat / 10)) : o.warmup;
    for (int i = 0; i < warmup; ++i) Check(nrt_run(m));
    std::vector<double> ms;
    for (int i = 0; i < o.repeat; ++i) {
      auto a = std::chrono::steady_clock::now();
      Check(nrt_run(m));
      ms.push_back(Seconds(a, std::chrono::steady_clock::now()) * 1e3);
    }
    std::vector<double> sorted = ms;
    std::sort(sorted.begin(), sorted.end());
    size_t n = sorted.size();
    double median = n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    double p90 = sorted[std::min(n - 1, static_cast<size_t>(0.9 * (n - 1) + 0.5))];
    char line[256];
    std::snprintf(line, sizeof line, "neo_run: %d runs after %d warm-up, %d thread(s): median %.4f ms, p90 %.4f ms, min %.4f ms",
                  o.repeat, warmup, threads, median, p90, sorted[0]);
    std::cout << line << '\n';
    timing << "run_s " << median / 1e3 << '\n' << "runs " << o.repeat << '\n' << "warmup " << warmup << '\n'
           << "median_ms " << median << '\n' << "p90_ms " << p90 << '\n' << "min_ms " << sorted[0] << '\n';
  } else {
    auto a = std::chrono::steady_clock::now();
    Check(nrt_run(m));
    timing << "run_s " << Seconds(a, std::chrono::steady_clock::now()) << '\n';
  }
  timing << "threads " << threads << '\n';
  if (!o.dir.empty()) {
    WriteOutputs(m, o.dir);
    std::ofstream out(o.dir + "/timing.txt", std::ios::trunc);
    out << timing.str();
  }
  return 0;
}

int Usage(const char* prog, const std::string& problem) {
  std::cerr << "neo_run: " << problem << "\nusage: " << prog << " [--threads N] <model> <io-dir>\n       " << prog
            << " [--threads N] --repeat N [--warmup M] <model> [<io-dir>]\n       " << prog
            << " [--threads N] --load-only <model>\n(<model>: the package folder or its compiled.so)\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::vector<std::string> positional;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string arg = argv[i];
      auto value = [&](const char* flag, int minimum) -> std::string {
        std::string f(flag);
        if (arg == f) {
          if (i + 1 == argc) throw UsageError(f + " needs a value: an integer >= " + std::to_string(minimum));
          return argv[++i];
        }
        return arg.substr(f.size() + 1);
      };
      auto is = [&](const char* flag) { return arg == flag || arg.rfind(std::string(flag) + "=", 0) == 0; };
      if (!positional.empty() || arg.rfind("--", 0) != 0) {
        positional.push_back(arg);
      } else if (arg == "--") {
        positional.insert(positional.end(), argv + i + 1, argv + argc);
        break;
      } else if (arg == "--load-only") {
        o.load_only = true;
      } else if (is("--threads")) {
        o.threads = ParseCount(value("--threads", 1), "--threads", 1);
      } else if (is("--repeat")) {
        o.repeat = ParseCount(value("--repeat", 1), "--repeat", 1);
      } else if (is("--warmup")) {
        o.warmup = ParseCount(value("--warmup", 0), "--warmup", 0);
      } else {
        throw UsageError("unknown option " + arg);
      }
    }
    if (o.load_only && o.repeat) throw UsageError("--load-only and --repeat exclude each other");
    if (o.warmup >= 0 && !o.repeat) throw UsageError("--warmup goes with --repeat");
    bool ok = o.load_only ? positional.size() == 1
                          : (o.repeat ? positional.size() == 1 || positional.size() == 2 : positional.size() == 2);
    if (!ok) {
      throw UsageError("expected " + std::string(o.load_only ? "<model>" : o.repeat ? "<model> [<io-dir>]" : "<model> <io-dir>") +
                       ", got " + std::to_string(positional.size()) + " argument(s)");
    }
    o.model = positional[0];
    if (positional.size() == 2) o.dir = positional[1];
    return Run(o);
  } catch (const UsageError& e) {
    return Usage(argv[0], e.what());
  } catch (const std::exception& e) {
    std::cerr << "neo_run: " << e.what() << '\n';
  } catch (...) {
    std::cerr << "neo_run: unknown error\n";
  }
  return 1;
}
