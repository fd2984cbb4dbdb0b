# The reactor's own tests (tests/reactor/), included from tests/CMakeLists.txt. The sources live
# in a folder of their own so the test_*.cpp glob there does not build them against nothing.
# test_reactor.cpp is built once per backend (every backend defines the same backend_* names,
# so one link each): test_reactor_epoll, _poll, _select, _kqueue — as models/CMakeLists.txt
# builds them for this platform (kqueue on Linux: through the test-only kevent emulation).
# test_kevent_emul checks that emulation itself against kqueue(2). Single-threaded code, so
# only the emulation's test (a kqueue per thread, side by side) carries the `tsan` label.
foreach(backend epoll poll select kqueue)
  if(NOT TARGET reactor_${backend})
    continue()
  endif()
  add_executable(test_reactor_${backend} ${CMAKE_CURRENT_SOURCE_DIR}/reactor/test_reactor.cpp)
  target_link_libraries(test_reactor_${backend} PRIVATE reactor_${backend} GTest::gtest GTest::gtest_main)
  target_compile_definitions(test_reactor_${backend} PRIVATE CONCBENCH_BACKEND="${backend}")
  set_target_properties(test_reactor_${backend} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
  gtest_discover_tests(test_reactor_${backend} TEST_PREFIX "${backend}." DISCOVERY_TIMEOUT 30
                       PROPERTIES TIMEOUT 300)
endforeach()

if(TARGET kevent_emul)
  add_executable(test_kevent_emul ${CMAKE_CURRENT_SOURCE_DIR}/reactor/test_kevent_emul.cpp)
  target_link_libraries(test_kevent_emul PRIVATE kevent_emul GTest::gtest GTest::gtest_main Threads::Threads)
  set_target_properties(test_kevent_emul PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
  gtest_discover_tests(test_kevent_emul DISCOVERY_TIMEOUT 30 PROPERTIES TIMEOUT 300 LABELS tsan)
endif()
