"""Generate end to end: streaming, reference tokens, chat, logprobs, errors, and the standard
services (health, reflection) and the admin port of one running funnel-server."""

import json
import unittest

import grpc
from google.protobuf import descriptor_pb2

from funnel.v1 import inference_pb2 as pb
from funnel_harness import FunnelServer, error_code, greedy, shared_data
from funnel_testing import health_pb2, health_pb2_grpc, reflection_pb2, reflection_pb2_grpc



def read(relative):
    with open(shared_data(relative)) as f:
        return f.read()


REF = json.loads(read("models/stories260K/stories260K.ref_greedy48.json"))
REF_TEXT_256 = read("models/stories260K/stories260K.greedy.t0.n256.txt")


class GenerateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = FunnelServer("--served-model-name", "stories")
        cls.server.start()
        cls.stub = cls.server.stub

    @classmethod
    def tearDownClass(cls):
        cls.server.kill()

    def test_greedy_matches_llama2c_reference(self):
        prompt = REF["prompt"]
        expected = REF["full_sequence_incl_last_prediction"][len(REF["prompt_ids_with_bos"]):]
        deltas, final = self.server.generate(
            pb.GenerateRequest(prompt=prompt, sampling=pb.SamplingParams(
                temperature=0, max_tokens=len(expected))))
        self.assertEqual([d.token_id for d in deltas], expected)
        self.assertEqual(list(final.prompt_ids), REF["prompt_ids_with_bos"])
        self.assertEqual(final.finish_reason, pb.FINISH_REASON_LENGTH)
        self.assertEqual(final.usage.prompt_tokens, len(REF["prompt_ids_with_bos"]))
        self.assertEqual(final.usage.completion_tokens, len(expected))
        text = "".join(d.text for d in deltas) + final.text
        self.assertTrue((prompt + text).startswith(REF["decoded_text"]), text)

    def test_deltas_concatenate_to_the_reference_text(self):
        deltas, final = self.server.generate(pb.GenerateRequest(
            prompt="Once upon a time", sampling=pb.SamplingParams(temperature=0, max_tokens=300)))
        text = "Once upon a time" + "".join(d.text for d in deltas) + final.text
        # llama2.c stops at BOS (256 tokens here); both are prefixes of one greedy story.
        shorter, longer = sorted([text, REF_TEXT_256.rstrip("\n")], key=len)
        self.assertTrue(longer.startswith(shorter), (text, REF_TEXT_256))
        self.assertGreater(len(deltas), 100)
        ids = [d.token_id for d in deltas]
        self.assertEqual(final.usage.completion_tokens, len(ids))

    def test_every_message_names_the_request(self):
        msgs = list(self.stub.Generate(pb.GenerateRequest(
            request_id="mine-1", prompt="Hi", sampling=greedy(5)), timeout=30))
        self.assertEqual(len(msgs), 6)
        self.assertTrue(all(m.request_id == "mine-1" for m in msgs))
        msgs = list(self.stub.Generate(pb.GenerateRequest(prompt="Hi", sampling=greedy(2)),
                                       timeout=30))
        self.assertTrue(msgs[0].request_id.startswith("req-"))
        self.assertEqual(len({m.request_id for m in msgs}), 1)

    def test_prompt_ids_are_fed_as_given(self):
        ids = REF["prompt_ids_with_bos"]
        deltas, final = self.server.generate(pb.GenerateRequest(
            prompt_ids=pb.PromptIds(ids=ids), sampling=greedy(10)))
        self.assertEqual(list(final.prompt_ids), ids)
        self.assertEqual([d.token_id for d in deltas],
                         REF["full_sequence_incl_last_prediction"][5:15])

    def test_sampling_with_seed_is_reproducible(self):
        req = pb.GenerateRequest(prompt="Once", sampling=pb.SamplingParams(
            temperature=1.0, top_p=0.9, seed=1234, max_tokens=30))
        a = [d.token_id for d in self.server.generate(req)[0]]
        b = [d.token_id for d in self.server.generate(req)[0]]
        self.assertEqual(a, b)

    def test_logprobs_when_asked(self):
        deltas, _ = self.server.generate(pb.GenerateRequest(
            prompt="Once upon a time", sampling=greedy(5, top_logprobs=3)))
        for d in deltas:
            self.assertEqual(d.logprob.token_id, d.token_id)
            self.assertLessEqual(d.logprob.logprob, 0.0)
            self.assertEqual(len(d.top_logprobs), 3)
            # Greedy: the chosen token is the most likely one.
            self.assertEqual(d.top_logprobs[0].token_id, d.token_id)
            self.assertAlmostEqual(d.top_logprobs[0].logprob, d.logprob.logprob, places=4)
        deltas, _ = self.server.generate(pb.GenerateRequest(prompt="Once", sampling=greedy(3)))
        self.assertFalse(any(d.HasField("logprob") or d.top_logprobs for d in deltas))

    def test_stop_string_ends_with_stop(self):
        deltas, final = self.server.generate(pb.GenerateRequest(
            prompt="Once upon a time", sampling=pb.SamplingParams(
                temperature=0, max_tokens=100, stop=["Lily"])))
        text = "".join(d.text for d in deltas) + final.text
        self.assertEqual(final.finish_reason, pb.FINISH_REASON_STOP)
        self.assertNotIn("Lily", text)
        self.assertTrue(text.startswith(", there was a little girl named"), text)

    def test_chat_messages_use_the_plain_default_template(self):
        # stories260K has no chat template: "System: ...\nUser: ...\nAssistant:" with BOS.
        msgs = pb.ChatMessages(messages=[pb.ChatMessage(role="user", content="Tell a story")])
        _, final = self.server.generate(pb.GenerateRequest(messages=msgs, sampling=greedy(4)))
        _, plain = self.server.generate(pb.GenerateRequest(
            prompt="User: Tell a story\nAssistant:", sampling=greedy(4)))
        self.assertEqual(list(final.prompt_ids), list(plain.prompt_ids))
        self.assertEqual(final.prompt_ids[0], 1)  # BOS
        # A named template works too (the markers are text in this vocabulary).
        _, chatml = self.server.generate(pb.GenerateRequest(
            messages=msgs, chat_template="chatml", sampling=greedy(2)))
        self.assertNotEqual(list(chatml.prompt_ids), list(final.prompt_ids))

    def test_unknown_chat_template_lists_the_valid_names(self):
        msgs = pb.ChatMessages(messages=[pb.ChatMessage(role="user", content="x")])
        with self.assertRaises(grpc.RpcError) as e:
            self.server.generate(pb.GenerateRequest(messages=msgs, chat_template="vicuna"))
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("chatml, llama2, llama3, mistral, plain, zephyr", e.exception.details())

    def test_bad_parameters_are_invalid_argument_and_the_server_keeps_serving(self):
        bad = [
            pb.GenerateRequest(),  # no input
            pb.GenerateRequest(prompt="x", sampling=pb.SamplingParams(temperature=-1)),
            pb.GenerateRequest(prompt="x", sampling=pb.SamplingParams(top_p=1.5)),
            pb.GenerateRequest(prompt="x", sampling=pb.SamplingParams(max_tokens=-3)),
            pb.GenerateRequest(prompt="x", sampling=pb.SamplingParams(top_logprobs=21)),
            pb.GenerateRequest(prompt="x", sampling=pb.SamplingParams(stop=[""])),
            pb.GenerateRequest(prompt_ids=pb.PromptIds(ids=[1, 99999])),
            pb.GenerateRequest(prompt_ids=pb.PromptIds(ids=[])),
            pb.GenerateRequest(prompt="x", kv_policy=pb.KvPolicy(method=pb.KV_METHOD_PYRAMIDKV)),
            pb.GenerateRequest(prompt="x", kv_policy=pb.KvPolicy(
                method=pb.KV_METHOD_SNAPKV, budget=64, kernel=4)),
            pb.GenerateRequest(prompt="x", kv_policy=pb.KvPolicy(method=99)),
            pb.GenerateRequest(prompt="x", request_id="has space"),
            pb.GenerateRequest(prompt="x", session_mode=pb.SESSION_MODE_APPEND),
            pb.GenerateRequest(prompt="x", chat_template="chatml"),
            pb.GenerateRequest(messages=pb.ChatMessages(messages=[pb.ChatMessage(role="robot")])),
            pb.GenerateRequest(messages=pb.ChatMessages()),
            pb.GenerateRequest(prompt_ids=pb.PromptIds(ids=[1] * 3000)),  # > context
        ]
        for req in bad:
            code = error_code(lambda: self.stub.Generate(req, timeout=30))
            self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, str(req))
        deltas, final = self.server.generate(pb.GenerateRequest(prompt="Once", sampling=greedy(3)))
        self.assertEqual(len(deltas), 3)
        rejected = self.server.metrics()[
            'funnel:request_rejections_total{reason="invalid_argument"}']
        self.assertGreaterEqual(rejected, len(bad))

    def test_prompt_text_that_is_not_utf8_is_invalid_argument(self):
        # Python's protobuf refuses to build such a message, so the bytes are written by hand:
        # field 2 (prompt), length-delimited, "\xff\xfe" — then field 5 with max_tokens 2.
        good = pb.GenerateRequest(prompt="ab", sampling=greedy(2)).SerializeToString()
        bad = good.replace(b"\x12\x02ab", b"\x12\x02\xff\xfe")
        self.assertNotEqual(good, bad)
        call = self.server.channel.unary_stream(
            "/funnel.v1.Inference/Generate", request_serializer=None,
            response_deserializer=pb.GenerateResponse.FromString)
        self.assertEqual(len(list(call(good, timeout=30))), 3)
        with self.assertRaises(grpc.RpcError) as e:
            list(call(bad, timeout=30))
        self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("UTF-8", e.exception.details())

    def test_deadline_exceeded(self):
        with self.assertRaises(grpc.RpcError) as e:
            self.server.generate(pb.GenerateRequest(prompt="Once", sampling=greedy(2000)),
                                 timeout=0.3)
        self.assertEqual(e.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)

    def test_list_models_and_server_info(self):
        models = self.stub.ListModels(pb.ListModelsRequest(), timeout=10).models
        self.assertEqual(len(models), 1)
        self.assertEqual(models[0].id, "stories")
        self.assertEqual(models[0].vocab_size, 512)
        self.assertEqual(models[0].num_layers, 5)
        info = self.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
        self.assertEqual(info.model.id, "stories")
        self.assertEqual(info.block_size, 16)
        self.assertGreater(info.pool_blocks, 0)
        self.assertEqual(info.pool_bytes % info.pool_blocks, 0)
        self.assertEqual(info.default_kv_policy.method, pb.KV_METHOD_FULL)
        self.assertEqual(info.default_kv_policy.window, 8)
        self.assertEqual(info.replica_id, "r0")
        self.assertEqual(info.chat_template, "plain")
        self.assertEqual(info.max_prompt_tokens, models[0].context_length)

    def test_health_service_is_serving(self):
        health = health_pb2_grpc.HealthStub(self.server.channel)
        for service in ["", "funnel.v1.Inference"]:
            r = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            self.assertEqual(r.status, health_pb2.HealthCheckResponse.SERVING, service)

    def test_reflection_lists_the_service(self):
        refl = reflection_pb2_grpc.ServerReflectionStub(self.server.channel)
        requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(
                        file_containing_symbol="funnel.v1.Inference")]
        responses = list(refl.ServerReflectionInfo(iter(requests), timeout=10))
        names = [s.name for s in responses[0].list_services_response.service]
        self.assertIn("funnel.v1.Inference", names)
        self.assertIn("grpc.health.v1.Health", names)
        files = [descriptor_pb2.FileDescriptorProto.FromString(b)
                 for b in responses[1].file_descriptor_response.file_descriptor_proto]
        methods = {m.name for f in files for s in f.service if s.name == "Inference"
                   for m in s.method}
        self.assertTrue({"Generate", "Cancel", "CreateSession", "GetServerInfo"} <= methods)

    def test_admin_endpoints_and_metric_names(self):
        self.assertEqual(self.server.http_get("/health")[0], 200)
        self.assertEqual(self.server.http_get("/ready")[0], 200)
        self.server.generate(pb.GenerateRequest(prompt="Once", sampling=greedy(4)))
        text = self.server.metrics_text()
        for name in ["funnel:num_requests_waiting", "funnel:num_requests_running",
                     "funnel:kv_cache_usage_perc", "funnel:kv_cache_compression_ratio",
                     "funnel:num_sessions", "funnel:time_to_first_token_seconds",
                     "funnel:time_per_output_token_seconds", "funnel:e2e_request_latency_seconds",
                     "funnel:prompt_tokens_total", "funnel:generation_tokens_total",
                     "funnel:num_preemptions_total", "funnel:request_rejections_total"]:
            self.assertIn("# TYPE " + name + " ", text)
        m = self.server.metrics()
        self.assertGreaterEqual(m["funnel:e2e_request_latency_seconds_count"], 1)
        self.assertGreaterEqual(m["funnel:time_to_first_token_seconds_count"], 1)
        self.assertGreaterEqual(m["funnel:generation_tokens_total"], 4)
        self.assertGreaterEqual(m["funnel:prompt_tokens_total"], 2)
        self.assertEqual(m['funnel:e2e_request_latency_seconds_bucket{le="+Inf"}'],
                         m["funnel:e2e_request_latency_seconds_count"])


if __name__ == "__main__":
    unittest.main()
