// neo_run: run a TVM Relax VM library once, without Python.
//
//   neo_run [--threads N] <model.so> <io-dir>
//   neo_run [--threads N] --load-only <model.so>     load the model and the runtime, set up the VM, run nothing
//
// <io-dir>/inputs.txt has one line per input of `main`, in order:
//   <dtype> <ndim> <d0> ... <d(ndim-1)> <path-to-raw-little-endian-file>
// (a relative path is taken relative to <io-dir>). Every output tensor of `main` (a tensor, or a
// possibly nested tuple of tensors, flattened depth first) is written to <io-dir>/output_<i>.bin
// and described in <io-dir>/outputs.txt in the same format (with the bare file name); <io-dir>/timing.txt
// gets "load_s", "run_s" and "threads" lines. stdout carries nothing but --load-only's one line.
//
// Weights: when <model>.params sits beside the model (compiled.so -> compiled.params; TVM's param-dict format with
// the names "main:0", "main:1", ...), it is loaded once and its tensors are passed to `main` after the inputs. A
// model without one embeds its weights (older packages). When compiled.meta beside the model says the weights are
// external ("Storage": "external") but the file is missing or unreadable, the run fails naming the file.
//
// Threads: --threads N, else $NEOCOMPILE_NUM_THREADS, else $TVM_NUM_THREADS, else every CPU this process may
// run on (its affinity mask, so taskset and cgroup cpusets count), free to run on any CPU of the mask. TVM's own
// default would be half of the machine's CPUs on x86, pinned one per core whatever the mask.
//
// A malformed command line or thread count: a message on stderr and exit status 2; any other failure: a message
// on stderr and exit status 1. When compiled.meta sits next to the model, its MinGlibc is checked against this
// system's glibc first, so an old OS gets a plain refusal naming both versions instead of the dynamic loader's
// "version `GLIBC_2.xx' not found".
//
// Built against the tvm-ffi headers only; link with -ltvm_runtime -ltvm_ffi (--no-as-needed so the
// runtime's static registrations, e.g. the Relax VM executable loader, run).
#include <dlfcn.h>
#include <gnu/libc-version.h>
#include <sched.h>
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/dtype.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>

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
#include <thread>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

constexpr int kPooledAllocator = 2;  // tvm::runtime::memory::AllocatorType::kPooled
constexpr int kShareAllCores = -3;   // tvm::runtime::threading::ThreadGroup::kSpecifyThreadShareAllCore
constexpr char kThreadsEnv[] = "NEOCOMPILE_NUM_THREADS";

// A malformed command line or setting: exit status 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct CPUAlloc {
  void AllocData(DLTensor* t) {
    size_t n = ffi::GetDataSize(*t);
    void* p = nullptr;
    if (posix_memalign(&p, 64, n == 0 ? 64 : n) != 0) throw std::runtime_error("out of memory");
    t->data = p;
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

struct TensorSpec {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string path;
};

[[noreturn]] void Fail(const std::string& msg) { throw std::runtime_error(msg); }

std::string JoinPath(const std::string& dir, const std::string& p) {
  if (!p.empty() && p[0] == '/') return p;
  return dir + "/" + p;
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

ffi::Tensor LoadTensor(const TensorSpec& s, const std::string& dir) {
  DLDataType dtype = ffi::StringToDLDataType(s.dtype);
  ffi::Tensor t = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::ShapeView(s.shape.data(), s.shape.size()), dtype,
                                           DLDevice{kDLCPU, 0});
  size_t nbytes = ffi::GetDataSize(*t.GetDLTensorPtr());
  std::string path = JoinPath(dir, s.path);
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) Fail("cannot open input data " + path);
  std::streamoff size = in.tellg();
  if (size != static_cast<std::streamoff>(nbytes)) {
    Fail("input data " + path + " has " + std::to_string(size) + " bytes; " + s.dtype + " shape needs " +
         std::to_string(nbytes));
  }
  in.seekg(0);
  if (nbytes && !in.read(static_cast<char*>(t.data_ptr()), nbytes)) Fail("cannot read " + path);
  return t;
}

void Flatten(const ffi::Any& v, std::vector<ffi::Tensor>* out) {
  if (auto t = v.as<ffi::Tensor>()) {
    out->push_back(*t);
  } else if (auto arr = v.as<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& e : *arr) Flatten(e, out);
  } else if (auto i = v.as<int64_t>()) {
    int64_t x = *i;
    ffi::Tensor t = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::ShapeView(nullptr, 0), DLDataType{kDLInt, 64, 1},
                                             DLDevice{kDLCPU, 0});
    std::memcpy(t.data_ptr(), &x, sizeof(x));
    out->push_back(t);
  } else if (auto f = v.as<double>()) {
    double x = *f;
    ffi::Tensor t = ffi::Tensor::FromNDAlloc(CPUAlloc(), ffi::ShapeView(nullptr, 0),
                                             DLDataType{kDLFloat, 64, 1}, DLDevice{kDLCPU, 0});
    std::memcpy(t.data_ptr(), &x, sizeof(x));
    out->push_back(t);
  } else {
    Fail("main returned a value of type " + v.GetTypeKey() + "; expected tensors or tuples of tensors");
  }
}

void WriteTensor(const ffi::Tensor& t, const std::string& dir, const std::string& name, std::ostream& index) {
  if (t.device().device_type != kDLCPU) Fail("output " + name + " is not on the CPU");
  const DLTensor* dl = t.GetDLTensorPtr();
  if (!t.IsContiguous()) Fail("output " + name + " is not contiguous");
  size_t nbytes = ffi::GetDataSize(*dl);
  const char* data = static_cast<const char*>(dl->data) + dl->byte_offset;
  std::string path = dir + "/" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out || (nbytes && !out.write(data, nbytes)) || !out.flush()) Fail("cannot write " + path);
  index << std::string(ffi::DLDataTypeToString(t.dtype())) << ' ' << t.ndim();
  for (int i = 0; i < t.ndim(); ++i) index << ' ' << t.shape()[i];
  index << ' ' << name << '\n';
}

std::vector<int> ParseVersion(const std::string& text) {
  std::vector<int> parts;
  std::istringstream ss(text);
  std::string part;
  while (std::getline(ss, part, '.')) parts.push_back(std::atoi(part.c_str()));
  return parts;
}

// The text of compiled.meta beside the model, or "" when there is none.
std::string MetaText(const std::string& lib_path) {
  size_t slash = lib_path.find_last_of('/');
  std::string meta = (slash == std::string::npos ? std::string(".") : lib_path.substr(0, slash)) + "/compiled.meta";
  std::ifstream in(meta);
  if (!in) return "";
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

// The package's "MinGlibc": "GLIBC_x.y" (compiled.meta beside the model), or "" when absent.
std::string RequiredGlibc(const std::string& lib_path) {
  std::string text = MetaText(lib_path);
  size_t key = text.find("\"MinGlibc\"");
  if (key == std::string::npos) return "";
  size_t start = text.find("GLIBC_", key);
  size_t end_of_value = text.find_first_of(",}\n", key);
  if (start == std::string::npos || start > end_of_value) return "";
  size_t end = text.find('"', start);
  return text.substr(start + 6, end - start - 6);
}

void CheckGlibc(const std::string& lib_path) {
  std::string need = RequiredGlibc(lib_path);
  if (need.empty()) return;
  std::string have = gnu_get_libc_version();
  if (ParseVersion(need) > ParseVersion(have)) {
    Fail("this package needs glibc " + need + " (compiled.meta MinGlibc) but this system has glibc " + have +
         "; compile the model for a TargetDevice whose reference OS matches this system");
  }
}

// "N" as a thread count (an integer >= 1); `what` names where it came from.
int ParseThreads(const std::string& text, const std::string& what) {
  bool digits = !text.empty() && text.size() <= 6 && text.find_first_not_of("0123456789") == std::string::npos;
  int value = digits ? std::atoi(text.c_str()) : 0;
  if (value < 1) throw UsageError(what + ": '" + text + "' is not valid; expected an integer >= 1");
  return value;
}

// The thread count: the --threads value (0: not given), else the environment, else every CPU in `cpus`.
int ThreadCount(int flag, const std::vector<unsigned>& cpus) {
  if (flag > 0) return flag;
  for (const char* name : {kThreadsEnv, "TVM_NUM_THREADS"}) {
    const char* value = std::getenv(name);
    if (value != nullptr && *value != '\0') return ParseThreads(value, name);
  }
  return static_cast<int>(cpus.size());
}

// The CPUs this process may run on: its affinity mask (taskset, cgroup cpusets), else all the machine's.
std::vector<unsigned> UsableCpus() {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  std::vector<unsigned> cpus;
  if (sched_getaffinity(0, sizeof(mask), &mask) == 0) {
    for (unsigned c = 0; c < CPU_SETSIZE; ++c) {
      if (CPU_ISSET(c, &mask)) cpus.push_back(c);
    }
  }
  for (unsigned c = 0; cpus.empty() && c < std::max(1u, std::thread::hardware_concurrency()); ++c) cpus.push_back(c);
  return cpus;
}

// Size the runtime's thread pool to `n` threads, free to run on every CPU of this process's mask. TVM would pin
// them to the CPUs listed (config_threadpool takes one per thread, so the first n of the mask) and, while creating
// the pool, to the machine's first CPUs whatever the mask; TVM_BIND_THREADS=0 stops both unless the user set it.
// Returns the thread count the pool reports.
int ConfigureThreads(int n, const std::vector<unsigned>& cpus) {
  ffi::Array<ffi::String> listed;
  for (int i = 0; i < n; ++i) listed.push_back(ffi::String(std::to_string(cpus[i % cpus.size()])));
  bool unpinned = std::getenv("TVM_BIND_THREADS") == nullptr;
  if (unpinned) setenv("TVM_BIND_THREADS", "0", 1);  // no other thread yet: setenv is safe
  ffi::Function::GetGlobalRequired("runtime.config_threadpool")(kShareAllCores, n, listed);
  if (unpinned) unsetenv("TVM_BIND_THREADS");
  return ffi::Function::GetGlobalRequired("runtime.NumThreads")().cast<int>();
}

// <model>.params: the model's path with its extension replaced (compiled.so -> compiled.params).
std::string ParamsPath(const std::string& lib_path) {
  size_t slash = lib_path.find_last_of('/');
  size_t dot = lib_path.find_last_of('.');
  bool has_ext = dot != std::string::npos && (slash == std::string::npos || dot > slash + 1);
  return (has_ext ? lib_path.substr(0, dot) : lib_path) + ".params";
}

// Whether compiled.meta beside the model says the weights live in a file of their own.
bool WeightsDeclaredExternal(const std::string& lib_path) {
  std::string text = MetaText(lib_path);
  size_t key = text.find("\"Storage\"");
  if (key == std::string::npos) return false;
  size_t value = text.find_first_not_of(" \t\n:", key + 9);
  return value != std::string::npos && text.compare(value, 10, "\"external\"") == 0;
}

// The weights of `function`, in parameter order, from the params file beside the model (none without one).
std::vector<ffi::Tensor> LoadWeights(const std::string& lib_path, const std::string& function) {
  std::string path = ParamsPath(lib_path);
  std::string name = path.substr(path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/') + 1);
  if (!std::ifstream(path)) {
    if (WeightsDeclaredExternal(lib_path)) {
      Fail(name + ": the package's weights file is missing (compiled.meta Model.Weights says they are stored in " +
           name + " beside the model); unpack the whole package");
    }
    return {};
  }
  ffi::Map<ffi::String, ffi::Tensor> table;
  try {
    table = ffi::Function::GetGlobalRequired("runtime.LoadParamsFromFile")(path)
                .cast<ffi::Map<ffi::String, ffi::Tensor>>();
  } catch (const ffi::Error& e) {
    Fail(name + ": not a readable weights file (" + std::string(e.message()) +
         "); the package is damaged: compile the model again or unpack the package anew");
  }
  std::string prefix = function + ":";
  size_t declared = 0;
  for (const auto& kv : table) {
    if (std::string(kv.first).rfind(prefix, 0) == 0) ++declared;
  }
  std::vector<ffi::Tensor> weights;
  for (size_t i = 0; i < declared; ++i) {
    auto it = table.find(prefix + std::to_string(i));
    if (it == table.end()) Fail(name + ": the weights file lacks " + prefix + std::to_string(i) + "; the package is damaged");
    weights.push_back((*it).second);
  }
  return weights;
}

ffi::Function LoadMain(const std::string& lib_path) {
  ffi::Module exec = ffi::Module::LoadFromFile(lib_path);
  ffi::Optional<ffi::Function> load_exec = exec->GetFunction("vm_load_executable");
  if (!load_exec.has_value()) Fail(lib_path + " is not a Relax VM executable (no vm_load_executable)");
  ffi::Module vm = (*load_exec)().cast<ffi::Module>();
  ffi::Optional<ffi::Function> init = vm->GetFunction("vm_initialization");
  if (!init.has_value()) Fail(lib_path + ": the VM has no vm_initialization");
  (*init)(static_cast<int>(kDLCPU), 0, kPooledAllocator);
  ffi::Optional<ffi::Function> main_fn = vm->GetFunction("main");
  if (!main_fn.has_value()) Fail(lib_path + " has no function 'main'");
  return main_fn.value();
}

int Run(const std::string& lib_path, const std::string& dir, int threads_flag) {
  std::vector<unsigned> cpus = UsableCpus();
  int threads = ThreadCount(threads_flag, cpus);  // a bad setting fails before anything loads
  CheckGlibc(lib_path);
  // Optional extras (sort/topk/random kernels) when shipped beside the runtime.
  dlopen("libtvm_runtime_extra.so", RTLD_NOW | RTLD_GLOBAL);
  threads = ConfigureThreads(threads, cpus);
  if (dir.empty()) {  // --load-only: proves the package loads on this OS without running the model's code
    LoadMain(lib_path);
    LoadWeights(lib_path, "main");
    std::cout << "neo_run: " << lib_path << " loaded\n";
    return 0;
  }

  std::vector<TensorSpec> specs = ReadSpecs(dir + "/inputs.txt");
  std::vector<ffi::Tensor> inputs;
  for (const TensorSpec& s : specs) inputs.push_back(LoadTensor(s, dir));

  auto t0 = std::chrono::steady_clock::now();
  ffi::Function main_fn = LoadMain(lib_path);
  std::vector<ffi::Tensor> weights = LoadWeights(lib_path, "main");
  auto t1 = std::chrono::steady_clock::now();

  std::vector<ffi::AnyView> args(inputs.begin(), inputs.end());
  args.insert(args.end(), weights.begin(), weights.end());
  ffi::Any ret;
  main_fn.CallPacked(args.data(), static_cast<int32_t>(args.size()), &ret);
  auto t2 = std::chrono::steady_clock::now();

  std::vector<ffi::Tensor> outputs;
  Flatten(ret, &outputs);
  std::ostringstream index;
  for (size_t i = 0; i < outputs.size(); ++i) WriteTensor(outputs[i], dir, "output_" + std::to_string(i) + ".bin", index);
  std::string index_path = dir + "/outputs.txt";
  std::string tmp = index_path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out || !(out << index.str()) || !out.flush()) Fail("cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), index_path.c_str()) != 0) Fail("cannot rename " + tmp);
  std::ofstream timing(dir + "/timing.txt", std::ios::trunc);
  timing << "load_s " << std::chrono::duration<double>(t1 - t0).count() << '\n'
         << "run_s " << std::chrono::duration<double>(t2 - t1).count() << '\n'
         << "threads " << threads << '\n';
  return 0;
}

int Usage(const char* prog, const std::string& problem) {
  std::cerr << "neo_run: " << problem << "\nusage: " << prog << " [--threads N] <model.so> <io-dir>\n       " << prog
            << " [--threads N] --load-only <model.so>\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  bool load_only = false;
  int threads = 0;
  std::vector<std::string> positional;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string arg = argv[i];
      if (!positional.empty() || arg.rfind("--", 0) != 0) {
        positional.push_back(arg);
      } else if (arg == "--") {
        positional.insert(positional.end(), argv + i + 1, argv + argc);
        break;
      } else if (arg == "--load-only") {
        load_only = true;
      } else if (arg == "--threads" || arg.rfind("--threads=", 0) == 0) {
        if (arg == "--threads" && i + 1 == argc) throw UsageError("--threads needs a value: an integer >= 1");
        threads = ParseThreads(arg == "--threads" ? argv[++i] : arg.substr(10), "--threads");
      } else {
        throw UsageError("unknown option " + arg);
      }
    }
    size_t want = load_only ? 1 : 2;
    if (positional.size() != want) {
      throw UsageError("expected " + std::string(load_only ? "<model.so>" : "<model.so> <io-dir>") + ", got " +
                       std::to_string(positional.size()) + " argument(s)");
    }
    return Run(positional[0], load_only ? "" : positional[1], threads);
  } catch (const UsageError& e) {
    return Usage(argv[0], e.what());
  } catch (const ffi::Error& e) {
    std::cerr << "neo_run: " << e.FullMessage() << '\n';
  } catch (const std::exception& e) {
    std::cerr << "neo_run: " << e.what() << '\n';
  } catch (...) {
    std::cerr << "neo_run: unknown error\n";
  }
  return 1;
}
