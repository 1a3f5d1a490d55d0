// Predict a CSV on an edge device in C++, with the folder `bentos export-edge` wrote: the same
// bundle and the same answers as examples/edge_predict.py, without Python. The network runs on
// Arm NN (Arm's inference engine for Cortex-A CPUs and Mali GPUs) through its TfLite parser.
//
//   apt-get install g++ libarmnn-dev libarmnntfliteparser-dev libarmnn-cpuref-backend22
//   apt-get install nlohmann-json3-dev libssl-dev   # on arm64 also libarmnn-cpuacc-backend22
//   g++ -std=c++17 -O2 -o edge_predict edge_predict.cpp -larmnnTfLiteParser -larmnn -lcrypto
//   ./edge_predict EDGE_DIR rows.csv > predictions.csv
//
// The CSV and the output are the Python example's: a header naming the model's features (any
// order, other columns ignored), each column read as model.json's preprocessing says, an empty
// cell a missing value; one line per row, the label and one probability per class (a
// regression: the number). Exit codes: 0; 2 a bad cell or a missing column (nothing printed);
// 4 the model is missing, tampered with, or one Arm NN cannot run.
//
// Arm NN 20.08 (Debian bookworm's) runs float32 models: `bentos train --quantize dynamic`, the
// default, which leaves small networks in float32. Its parser cannot read float16 weights (they
// come out of DEQUANTIZE ops, not constants) nor int8 weights quantized per channel, so those
// bundles are refused before Arm NN sees them (docs/edge.md).
#include <armnn/ArmNN.hpp>
#include <armnnTfLiteParser/ITfLiteParser.hpp>
#include <nlohmann/json.hpp>
#include <openssl/evp.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

using json = nlohmann::json;

namespace {

[[noreturn]] void fail(int code, const std::string& message) {
    std::cerr << message << "\n";
    std::exit(code);
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(4, path + ": cannot be read");
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}

std::string sha256_hex(const std::string& bytes) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    EVP_Digest(bytes.data(), bytes.size(), digest, &size, EVP_sha256(), nullptr);
    static const char* hex = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < size; ++i) {
        out += hex[digest[i] >> 4];
        out += hex[digest[i] & 15];
    }
    return out;
}

// Python's repr of the first 40 characters of a cell, as the Python example quotes it.
std::string quoted(const std::string& cell) { return "'" + cell.substr(0, 40) + "'"; }

std::string strip(const std::string& s) {
    const char* space = " \t\n\r\f\v";
    auto first = s.find_first_not_of(space);
    if (first == std::string::npos) return "";
    return s.substr(first, s.find_last_not_of(space) - first + 1);
}

// One CSV record (RFC 4180: quoted fields may hold commas, quotes and newlines), as Python's
// csv module reads it; `line` is the line its last character is on. False at the end.
bool read_record(std::istream& in, std::vector<std::string>& fields, long& line) {
    fields.clear();
    std::string field;
    bool quoted_field = false, any = false;
    int c;
    while ((c = in.get()) != EOF) {
        any = true;
        if (quoted_field) {
            if (c == '"') {
                if (in.peek() == '"') {
                    field += static_cast<char>(in.get());
                } else {
                    quoted_field = false;
                }
            } else {
                if (c == '\n') ++line;
                field += static_cast<char>(c);
            }
        } else if (c == '"' && field.empty()) {
            quoted_field = true;
        } else if (c == ',') {
            fields.push_back(field);
            field.clear();
        } else if (c == '\n' || c == '\r') {
            if (c == '\r' && in.peek() == '\n') in.get();
            ++line;
            fields.push_back(field);
            return true;
        } else {
            field += static_cast<char>(c);
        }
    }
    if (!any) return false;
    ++line;
    fields.push_back(field);
    return true;
}

struct Column {
    std::string name, kind;
    std::map<std::string, double> levels;  // a categorical column's training levels
    std::vector<std::string> parts;        // a datetime column's parts
    size_t width() const { return kind == "datetime" ? parts.size() : 1; }
};

double number(const std::string& cell) {
    std::string text = strip(cell);
    char* end = nullptr;
    double value = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0') throw std::invalid_argument("");
    if (!std::isfinite(value))
        throw std::invalid_argument("expected a finite number, got " + quoted(cell));
    return value;
}

// Python's datetime.fromisoformat for the forms tables hold: YYYY-MM-DD, then optionally
// (T or a space) HH:MM[:SS[.ffffff]], then optionally Z or +HH:MM / -HH:MM (to UTC).
std::vector<int> date_parts(const std::string& cell) {
    std::string s = strip(cell);
    int y, mo, d, h = 0, mi = 0, offset = 0;
    double sec = 0;
    int n = 0;
    auto bad = [&] { return std::invalid_argument("expected an ISO-8601 date, got " + quoted(cell)); };
    if (s.size() < 10 || std::sscanf(s.c_str(), "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || n != 10)
        throw bad();
    size_t at = 10;
    if (at < s.size() && (s[at] == 'T' || s[at] == ' ')) {
        int used = 0;
        if (std::sscanf(s.c_str() + at + 1, "%2d:%2d%n", &h, &mi, &used) != 2 || used != 5)
            throw bad();
        at += 1 + used;
        if (at < s.size() && s[at] == ':') {
            if (std::sscanf(s.c_str() + at + 1, "%lf%n", &sec, &used) != 1) throw bad();
            at += 1 + used;
        }
        if (at < s.size() && s[at] == 'Z') {
            ++at;
        } else if (at < s.size() && (s[at] == '+' || s[at] == '-')) {
            int oh, om;
            if (std::sscanf(s.c_str() + at + 1, "%2d:%2d%n", &oh, &om, &used) != 2 || used != 5)
                throw bad();
            offset = (s[at] == '+' ? 1 : -1) * (oh * 60 + om);
            at += 1 + used;
        }
    }
    if (at != s.size() || mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59) throw bad();
    std::tm day{};
    day.tm_year = y - 1900;
    day.tm_mon = mo - 1;
    day.tm_mday = d;
    std::time_t midnight = timegm(&day);
    std::tm check{};
    gmtime_r(&midnight, &check);
    if (check.tm_mday != d) throw bad();  // 2026-02-30 and the like
    std::tm when{};
    when.tm_year = y - 1900;
    when.tm_mon = mo - 1;
    when.tm_mday = d;
    when.tm_hour = h;
    when.tm_min = mi - offset;  // to UTC; timegm normalizes
    std::time_t t = timegm(&when);
    std::tm utc{};
    gmtime_r(&t, &utc);
    return {utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, (utc.tm_wday + 6) % 7, utc.tm_hour,
            utc.tm_min};
}

std::vector<double> encode(const Column& column, const std::string& cell,
                           const std::vector<std::string>& true_words,
                           const std::vector<std::string>& false_words) {
    if (column.kind == "numeric") {
        try {
            return {number(cell)};
        } catch (const std::invalid_argument& e) {
            throw std::invalid_argument(*e.what() ? e.what()
                                                  : "expected a number, got text " + quoted(cell));
        }
    }
    if (column.kind == "boolean") {
        std::string word = strip(cell);
        std::transform(word.begin(), word.end(), word.begin(), ::tolower);
        if (std::count(true_words.begin(), true_words.end(), word)) return {1.0};
        if (std::count(false_words.begin(), false_words.end(), word)) return {0.0};
        throw std::invalid_argument("expected true or false, got " + quoted(cell));
    }
    if (column.kind == "categorical") {
        auto found = column.levels.find(cell);
        return {found == column.levels.end() ? double(column.levels.size()) : found->second};
    }
    std::vector<int> all = date_parts(cell);  // year, month, day, dayofweek, hour, minute
    std::map<std::string, int> by_name = {{"year", all[0]},      {"month", all[1]},
                                          {"day", all[2]},       {"dayofweek", all[3]},
                                          {"hour", all[4]},      {"minute", all[5]}};
    std::vector<double> out;
    for (const auto& part : column.parts) out.push_back(by_name.at(part));
    return out;
}

// The network's input from an encoded row: what bentos.schema.dense does on the server, with
// model.json's preprocessing.dense read once (none: the row as it is).
struct Dense {
    bool given = false;
    std::vector<double> fill, center, scale;
    std::vector<long> onehot;
    std::vector<bool> indicator;  // by encoded column: a missing-value column follows it

    explicit Dense(const json& spec) {
        if (spec.is_null()) return;
        given = true;
        fill = spec["fill"].get<std::vector<double>>();
        onehot = spec["onehot"].get<std::vector<long>>();
        indicator.assign(fill.size(), false);
        for (const auto& j : spec["indicators"]) indicator.at(j.get<size_t>()) = true;
        if (spec.contains("center") && !spec["center"].empty()) {
            center = spec["center"].get<std::vector<double>>();
            scale = spec["scale"].get<std::vector<double>>();
        }
    }

    std::vector<float> apply(const std::vector<double>& x) const {
        if (!given) return std::vector<float>(x.begin(), x.end());
        std::vector<double> out;
        for (size_t j = 0; j < x.size(); ++j) {
            bool missing = std::isnan(x[j]);
            double filled = missing ? fill[j] : x[j];
            if (long k = onehot[j]) {
                long level = std::clamp(static_cast<long>(filled), 0L, k - 1);
                for (long i = 0; i < k; ++i) out.push_back(i == level ? 1.0 : 0.0);
            } else {
                out.push_back(filled);
            }
            if (indicator[j]) out.push_back(missing ? 1 : 0);
        }
        std::vector<float> result(out.size());
        for (size_t i = 0; i < out.size(); ++i)
            result[i] = static_cast<float>(center.empty() ? out[i] : (out[i] - center[i]) / scale[i]);
        return result;
    }
};

void write_field(const std::string& field, bool last) {
    if (field.find_first_of(",\"\r\n") != std::string::npos) {
        std::string escaped;
        for (char c : field) escaped += c == '"' ? std::string("\"\"") : std::string(1, c);
        std::cout << '"' << escaped << '"';
    } else {
        std::cout << field;
    }
    std::cout << (last ? "\r\n" : ",");  // Python's csv.writer ends lines with \r\n
}

// A float32 answer as the Python example prints it: Python's repr of its exact value (the
// shortest digits that read back as the same double), fixed from 1e-4 to 1e16.
std::string float32_text(float value) {
    char buf[64];
    double exact = value, magnitude = std::fabs(exact);
    bool fixed = magnitude == 0 || (magnitude >= 1e-4 && magnitude < 1e16);
    auto format = fixed ? std::chars_format::fixed : std::chars_format::scientific;
    std::string text(buf, std::to_chars(buf, buf + sizeof buf, exact, format).ptr);
    if (fixed && text.find('.') == std::string::npos) text += ".0";
    return text;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) fail(2, "usage: edge_predict EDGE_DIR rows.csv > predictions.csv");
    const std::string folder = argv[1], csv_path = argv[2];
    const json manifest = json::parse(read_file(folder + "/model.json"));
    const std::string model_path = folder + "/" + manifest["file"].get<std::string>();
    const std::string content = read_file(model_path);
    if (sha256_hex(content) != manifest["sha256"].get<std::string>())
        fail(4, model_path + ": sha256 does not match model.json; refusing to run it");
    const auto& input = manifest["tensors"]["inputs"][0];
    const auto& output = manifest["tensors"]["outputs"][0];
    if (input["dtype"] != "float32" || manifest["quantization"] == "float16")
        fail(4, model_path + ": a " + manifest["quantization"].get<std::string>() +
                    " model; Arm NN 20.08 runs float32 models only (bentos train --quantize "
                    "dynamic); run this one with examples/edge_predict.py");

    // The columns as model.json's preprocessing reads them (none: numbers, none missing).
    const json& prep = manifest.contains("preprocessing") ? manifest["preprocessing"] : json();
    std::vector<Column> columns;
    std::vector<std::string> true_words, false_words;
    if (prep.is_null()) {
        for (const auto& name : manifest["feature_order"]) columns.push_back({name, "numeric", {}, {}});
    } else {
        true_words = prep["true_words"].get<std::vector<std::string>>();
        false_words = prep["false_words"].get<std::vector<std::string>>();
        for (const auto& c : prep["columns"]) {
            Column column{c["name"], c["kind"], {}, {}};
            if (c.contains("levels"))
                for (size_t i = 0; i < c["levels"].size(); ++i) column.levels[c["levels"][i]] = i;
            if (c.contains("parts")) column.parts = c["parts"].get<std::vector<std::string>>();
            columns.push_back(column);
        }
    }

    std::ifstream in(csv_path, std::ios::binary);
    if (!in) fail(1, csv_path + ": cannot be read");
    std::vector<std::string> header, record;
    long line = 0;
    read_record(in, header, line);
    std::vector<long> where;  // each column's field in a record
    std::string missing_columns;
    for (const auto& column : columns) {
        auto found = std::find(header.begin(), header.end(), column.name);
        where.push_back(found == header.end() ? -1 : found - header.begin());
        if (found == header.end())
            missing_columns += (missing_columns.empty() ? "" : ", ") + column.name;
    }
    if (!missing_columns.empty()) fail(2, csv_path + ": missing column(s) " + missing_columns);

    std::vector<std::vector<double>> rows;
    std::vector<std::string> problems;
    std::vector<std::pair<std::string, long>> unknown;  // in the order first seen
    for (long i = 0; read_record(in, record, line);) {
        if (record.size() == 1 && record[0].empty()) continue;  // a blank line, as csv skips it
        std::vector<double> values;
        for (size_t c = 0; c < columns.size(); ++c) {
            const Column& column = columns[c];
            std::string cell = where[c] < long(record.size()) ? record[where[c]] : "";
            if (strip(cell).empty()) {
                values.insert(values.end(), column.width(), NAN);
                if (prep.is_null())
                    problems.push_back("row " + std::to_string(i) + " (line " +
                                       std::to_string(line) + "), column '" + column.name +
                                       "': expected a number, got an empty cell");
                continue;
            }
            try {
                auto encoded = encode(column, cell, true_words, false_words);
                if (column.kind == "categorical" && encoded[0] == column.levels.size()) {
                    auto seen = std::find_if(unknown.begin(), unknown.end(),
                                             [&](auto& u) { return u.first == column.name; });
                    if (seen == unknown.end()) unknown.push_back({column.name, 1});
                    else ++seen->second;
                }
                values.insert(values.end(), encoded.begin(), encoded.end());
            } catch (const std::invalid_argument& e) {
                problems.push_back("row " + std::to_string(i) + " (line " + std::to_string(line) +
                                   "), column '" + column.name + "': " + e.what());
                values.insert(values.end(), column.width(), NAN);
            }
        }
        rows.push_back(values);
        ++i;
    }
    if (!problems.empty()) {
        // Nothing is predicted from a file with a bad cell, as the server refuses a request.
        std::cerr << csv_path << ": " << problems.size() << " bad cell(s); nothing was predicted\n";
        for (size_t p = 0; p < problems.size() && p < 10; ++p) std::cerr << "  " << problems[p] << "\n";
        return 2;
    }
    for (const auto& [name, count] : unknown)
        std::cerr << csv_path << ": " << count << " value(s) of '" << name
                  << "' not seen in training\n";

    // The network, parsed, optimized for the CPU and loaded once; then one row per run.
    armnn::IRuntimePtr runtime = armnn::IRuntime::Create(armnn::IRuntime::CreationOptions());
    armnn::NetworkId network_id;
    armnnTfLiteParser::BindingPointInfo in_binding, out_binding;
    try {
        auto parser = armnnTfLiteParser::ITfLiteParser::Create();
        std::vector<uint8_t> bytes(content.begin(), content.end());
        armnn::INetworkPtr network = parser->CreateNetworkFromBinary(bytes);
        in_binding = parser->GetNetworkInputBindingInfo(0, input["name"]);
        out_binding = parser->GetNetworkOutputBindingInfo(0, output["name"]);
        // Arm's NEON backend where there is one (arm64's libarmnn-cpuacc-backend22), else the
        // reference backend, which every build has.
        std::vector<armnn::BackendId> backends = {armnn::Compute::CpuAcc, armnn::Compute::CpuRef};
        armnn::IOptimizedNetworkPtr optimized =
            armnn::Optimize(*network, backends, runtime->GetDeviceSpec());
        std::string error;
        if (runtime->LoadNetwork(network_id, std::move(optimized), error) != armnn::Status::Success)
            throw armnn::Exception(error);
    } catch (const armnn::Exception& e) {
        fail(4, model_path + ": Arm NN cannot run it: " + e.what());
    }
    const Dense dense(prep.is_null() ? json() : prep["dense"]);
    const unsigned width = in_binding.second.GetNumElements();
    std::vector<float> out(out_binding.second.GetNumElements());
    const bool regression = manifest.value("task", "classification") == "regression";
    // A regression's network answers the standardized target: its mean and spread, read once.
    const double target_mean = regression ? manifest["target_scale"]["mean"].get<double>() : 0;
    const double target_std = regression ? manifest["target_scale"]["std"].get<double>() : 1;
    std::vector<std::string> labels;  // as Python prints them: 0, yes, True
    for (const auto& label : manifest["class_labels"])
        labels.push_back(label.is_string()    ? label.get<std::string>()
                         : label.is_boolean() ? (label.get<bool>() ? "True" : "False")
                                              : label.dump());
    if (regression) {
        write_field(manifest["target"].get<std::string>(), true);
    } else {
        write_field("label", false);
        for (size_t k = 0; k < labels.size(); ++k) write_field("p_" + labels[k], k + 1 == labels.size());
    }
    char text[32];
    for (const auto& row : rows) {
        std::vector<float> x = dense.apply(row);
        if (x.size() != width)
            fail(4, model_path + ": its input takes " + std::to_string(width) + " values, the " +
                        "preprocessing makes " + std::to_string(x.size()));
        armnn::InputTensors inputs{{in_binding.first,
                                    armnn::ConstTensor(in_binding.second, x.data())}};
        armnn::OutputTensors outputs{{out_binding.first,
                                      armnn::Tensor(out_binding.second, out.data())}};
        if (runtime->EnqueueWorkload(network_id, inputs, outputs) != armnn::Status::Success)
            fail(4, model_path + ": Arm NN failed to run a row");
        if (regression) {
            double value = double(out[0]) * target_std + target_mean;
            write_field(float32_text(static_cast<float>(value)), true);
            continue;
        }
        size_t best = std::max_element(out.begin(), out.end()) - out.begin();
        write_field(labels[best], false);
        for (size_t k = 0; k < out.size(); ++k) {
            std::snprintf(text, sizeof text, "%.6f", double(out[k]));
            write_field(text, k + 1 == out.size());
        }
    }
    return 0;
}
